"""Initial states other than zeros: drawn from an initializer (Flax's ``carry_init``) for noisy or constant starts.

A cell's own ``initial_state(params, batch_shape)`` gives zeros; :func:`initial_state` fills the same structure,
leaf by leaf, from any ``jax.nn.initializers`` function. Learnable initial states are params, and live in the
Flax and Equinox adapters (``learnable_initial_state=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from recurrax.core import Cell, Params, PRNGKey, State
from recurrax.layers import Layer

Initializer = Callable[[PRNGKey, tuple[int, ...], Any], jax.Array]


def initial_state(
    cell: Cell | Layer,
    params: Params,
    batch_shape: Sequence[int] = (),
    init: Initializer | None = None,
    *,
    key: PRNGKey | None = None,
) -> State:
    """The initial state of ``cell`` for ``batch_shape``, drawn from ``init`` (zeros without it).

    Args:
      cell: a cell or a layer.
      params: its params.
      batch_shape: the batch dims of the state's leaves (``(*batch_shape, features)``).
      init: a ``jax.nn.initializers`` function ``(key, shape, dtype) -> array`` (e.g. ``normal(0.1)``,
        ``constant(0.5)``), called once per leaf of the state with its own key, shape and dtype (complex leaves,
        such as the LRU's ``x``, get complex draws). With a ``key`` but no ``init``:
        ``jax.nn.initializers.normal(1.0)``, a standard normal start.
      key: the PRNG key of the draws; needed whenever ``init`` is given.

    Returns:
      A state of the structure, shapes and dtypes of ``cell.initial_state(params, batch_shape)``.
    """
    if not isinstance(cell, (Cell, Layer)):
        raise TypeError(f"initial_state: `cell` must be a recurrax.Cell or Layer, got {type(cell).__name__}.")
    batch_shape = tuple(batch_shape)
    if not all(isinstance(n, int) and n >= 0 for n in batch_shape):
        raise ValueError(f"initial_state: `batch_shape` must be a tuple of ints >= 0, got {batch_shape!r}.")
    zeros = cell.initial_state(params, batch_shape)
    if init is None and key is None:
        return zeros
    if init is None:
        init = jax.nn.initializers.normal(1.0)
    if not callable(init):
        raise TypeError(f"initial_state: `init` must be an initializer (key, shape, dtype) -> array, got {init!r}.")
    if key is None:
        raise ValueError("initial_state: `init` draws at random, so it needs a `key` (e.g. jax.random.key(0)).")
    leaves, tree = jax.tree.flatten(zeros)
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(zeros)[0]]
    drawn = []
    for path, leaf, k in zip(paths, leaves, jax.random.split(key, len(leaves))):
        value = jnp.asarray(init(k, leaf.shape, leaf.dtype))
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ValueError(
                f"initial_state: `init` must return an array of the shape and dtype it is asked for; for "
                f"`state{path}` it was asked for {leaf.shape} {leaf.dtype}, got {value.shape} {value.dtype}."
            )
        drawn.append(value)
    return tree.unflatten(drawn)
