"""A single example's state pytree as one flat vector, and the checks every analysis shares.

The analyses work on one example at a time (vmap over batches, seeds or params): state leaves are
``(n_i,)`` vectors and the flat state is their concatenation in pytree order, ``(S,)`` with
``S = sum n_i``. For ``LSTMState(h, c)`` that is ``[h, c]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import core
from recurrax.core import Array, Cell, Params, State


def check_state(fn: str, state: State, arg: str = "state", cell: Cell | None = None, params: Params = None) -> None:
    """Raises unless every leaf of ``state`` is a floating-point vector ``(n,)`` (one example) and, given
    ``cell`` and ``params``, has the structure, sizes and dtypes of the cell's state."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if not leaves:
        raise TypeError(f"{fn}: `{arg}` has no array leaves.")
    for path, leaf in leaves:
        where = f"{arg}{jax.tree_util.keystr(path)}"
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{fn}: `{where}` must be a real floating-point array to be differentiated, got dtype {dtype}."
            )
        if np.ndim(leaf) != 1:
            raise ValueError(
                f"{fn}: `{where}` must be one example's state, shape (n,), got {tuple(np.shape(leaf))}; "
                f"use jax.vmap over batch dimensions."
            )
    if cell is not None:
        core.check_state(fn, cell.initial_state, params, state, (), arg=arg)


def sizes(state: State) -> list[int]:
    """The length of each leaf, in pytree order."""
    return [int(np.shape(leaf)[-1]) for leaf in jax.tree_util.tree_leaves(state)]


def flatten(state: State) -> Array:
    """``(*batch, S)``: the leaves concatenated along their last (feature) axis."""
    return jnp.concatenate(jax.tree_util.tree_leaves(state), axis=-1)


def unflatten(like: State, vec: Array) -> State:
    """The inverse of :func:`flatten`: splits ``vec[..., S]`` into leaves shaped (and typed) as ``like``'s."""
    leaves, tree = jax.tree_util.tree_flatten(like)
    parts = jnp.split(vec, np.cumsum(sizes(like))[:-1], axis=-1)
    return jax.tree_util.tree_unflatten(tree, [p.astype(leaf.dtype) for p, leaf in zip(parts, leaves)])


def blocks(like: State, matrix: Array, like_in: State | None = None) -> Any:
    """Splits ``matrix[..., S_out, S_in]`` into a state-of-states: ``blocks.<out field>.<in field>``.

    The outer structure is ``like``'s (rows, the output), the inner one ``like_in``'s (columns, the
    input; ``like`` when ``None``), as ``jax.jacfwd`` of a state-to-state function arranges them.
    A non-pytree ``like_in`` (an input vector) leaves the columns whole: ``blocks.<out field>``.
    """
    out_tree = jax.tree_util.tree_structure(like)
    rows = jnp.split(matrix, np.cumsum(sizes(like))[:-1], axis=-2)
    like_in = like if like_in is None else like_in
    if isinstance(like_in, jax.Array | np.ndarray):
        return jax.tree_util.tree_unflatten(out_tree, rows)
    in_tree = jax.tree_util.tree_structure(like_in)
    cut = np.cumsum(sizes(like_in))[:-1]
    inner = [jax.tree_util.tree_unflatten(in_tree, jnp.split(r, cut, axis=-1)) for r in rows]
    return jax.tree_util.tree_unflatten(out_tree, inner)


def check_inputs(fn: str, cell: Cell, params: Params, xs: Array, arg: str = "xs", *, sequence: bool = True) -> Array:
    """Checks one example's inputs, ``xs: (T, I)`` (or ``x: (I,)`` when not a ``sequence``), against the params."""
    xs = jnp.asarray(xs)
    want = 2 if sequence else 1
    if xs.ndim != want:
        shape = "(T, I)" if sequence else "(I,)"
        raise ValueError(
            f"{fn}: `{arg}` must be one example's inputs, shape {shape}, got {tuple(xs.shape)}; "
            f"use jax.vmap over batch dimensions."
        )
    _check_against_params(fn, cell, params, xs, arg)
    return xs


def check_point(fn: str, cell: Cell, params: Params, state: State, x: Array) -> Array:
    """Checks one state (leaves ``(n,)``, float) and one input ``x: (I,)``; returns ``x`` as an array."""
    check_state(fn, state, "state", cell, params)
    return check_inputs(fn, cell, params, x, "x", sequence=False)


def _check_against_params(fn: str, cell: Cell, params: Params, xs: Array, arg: str) -> None:
    """Traces ``cell.project`` on ``xs`` so a wrong feature size or dtype fails here, named ``arg``."""
    try:
        jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape, xs.dtype))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{fn}: `{arg}` does not fit the cell's params: {err}") from err


def initial_state(fn: str, cell: Cell, params: Params, state: State | None) -> State:
    """``state`` checked as one example's float state, or the cell's zero state when ``None``."""
    if state is None:
        state = cell.initial_state(params, ())
    check_state(fn, state, "state", cell, params)
    return state


def step_fn(cell: Cell, params: Params, like: State):
    """``(s[S], z[G]) -> s'[S]``: the cell's transition on flat states."""

    def f(vec: Array, z: Array) -> Array:
        return flatten(cell.transition(params, unflatten(like, vec), z))

    return f


def check_square(fn: str, matrix: Array, *, batched: bool) -> Array:
    """``matrix`` as an array, checked to be square, ``(S, S)`` (``(..., S, S)`` when ``batched``)."""
    matrix = jnp.asarray(matrix)
    if (matrix.ndim < 2 if batched else matrix.ndim != 2) or matrix.shape[-1] != matrix.shape[-2]:
        want = "(..., S, S)" if batched else "(S, S)"
        raise ValueError(f"{fn}: `matrix` must be a square matrix {want}, got shape {tuple(matrix.shape)}.")
    return matrix


def check_count(fn: str, arg: str, value: Any, *, low: int) -> None:
    """Raises unless ``value`` is an int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{fn}: `{arg}` must be an int >= {low}, got {value!r}.")


def concrete(x: Any) -> Any:
    """``x`` as NumPy when it is a concrete value, else ``None`` (inside jit or vmap)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        return None
