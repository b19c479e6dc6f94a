"""Perturbation response: how far a run pushed off course at ``t0`` stays from the clean run.

Distances are Euclidean; for a complex field (the LRU's ``x``) that is the norm of its real view
(``sqrt(sum |d|^2)``), the same as in :func:`recurrax.dynamics.flatten`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat


class PerturbationResponse(NamedTuple):
    """Distances ``|| s'_t - s_t ||`` of the perturbed run from the clean one at every boundary ``t = 0..T``.

    ``distance`` per field (leaves ``(T + 1,)``), ``total`` over the whole state; zero before ``t0``.
    """

    distance: State
    total: Array


def field_perturbation(state: State, field: str, vector: Array) -> State:
    """A perturbation shaped like ``state``: ``vector`` in ``field``, zeros elsewhere.

    ``field`` names a leaf as :func:`recurrax.dynamics.field_names` does: ``"c"`` for a cell's state, ``"1.c"``
    for the second layer's ``c`` in a stack's tuple of states.
    """
    names = _flat.field_names(state)
    if field not in names:
        raise ValueError(f"dynamics.field_perturbation: `field` must be one of {names}, got {field!r}.")
    leaves, tree = jax.tree_util.tree_flatten(state)
    kicked = [
        jnp.broadcast_to(jnp.asarray(vector, jnp.result_type(leaf)), jnp.shape(leaf))
        if name == field
        else jnp.zeros_like(leaf)
        for name, leaf in zip(names, leaves)
    ]
    return jax.tree_util.tree_unflatten(tree, kicked)


@_flat.on_steps
def perturbation_response(
    cell: Cell,
    params: Params,
    xs: Array,
    perturbation: State,
    *,
    t0: int | Array = 0,
    state: State | None = None,
) -> PerturbationResponse:
    """Runs the cell twice on ``xs``, once with ``perturbation`` added to the state at boundary ``t0``.

    Both runs go through the same loop, so before ``t0`` the distance is exactly zero.

    Args:
      cell, params: the cell and its params.
      xs: one example's inputs ``(T, I)``.
      perturbation: added to the state before ``xs[t0]`` is consumed; a state (leaves ``(n,)``), see
        :func:`field_perturbation`.
      t0: the boundary ``0 <= t0 <= T`` (may be traced, e.g. vmapped over).
      state: the initial state; zeros when ``None``.

    Returns:
      A :class:`PerturbationResponse`.
    """
    fn = "dynamics.perturbation_response"
    xs = _flat.check_inputs(fn, cell, params, xs)
    state = _flat.initial_state(fn, cell, params, state)
    _flat.check_state(fn, perturbation, "perturbation")
    if jax.tree_util.tree_structure(perturbation) != jax.tree_util.tree_structure(state) or _shapes(
        perturbation
    ) != _shapes(state):
        raise ValueError(
            f"{fn}: `perturbation` must be shaped like the state {_shapes(state)}, got {_shapes(perturbation)}."
        )
    # A real kick of a complex field is a kick along the real axis; a complex kick of a real field has nowhere to go.
    for (path, d), a in zip(jax.tree_util.tree_leaves_with_path(perturbation), jax.tree_util.tree_leaves(state)):
        if _flat.is_complex(d) and not _flat.is_complex(a):
            raise TypeError(
                f"{fn}: `perturbation{jax.tree_util.keystr(path)}` is complex but that state field is real "
                f"({jnp.result_type(a)})."
            )
    num_steps = xs.shape[0]
    t0_value = _flat.concrete(t0)
    if t0_value is not None and not 0 <= int(t0_value) <= num_steps:
        raise ValueError(f"{fn}: `t0` must lie in [0, T={num_steps}], got {int(t0_value)}.")
    zs = cell.project(params, xs)

    def kick(s, t):
        return jax.tree.map(lambda a, d: jnp.where(t == t0, a + d, a).astype(a.dtype), s, perturbation)

    def body(carry, inputs):
        clean, pert = carry
        z, t = inputs
        clean = cell.transition(params, clean, z)
        pert = kick(cell.transition(params, pert, z), t + 1)
        return (clean, pert), (clean, pert)

    first = (state, kick(state, 0))
    _, (cleans, perts) = jax.lax.scan(body, first, (zs, jnp.arange(num_steps)))
    cleans, perts = (
        jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), s0, s) for s0, s in zip(first, (cleans, perts))
    )
    diff = jax.tree.map(jnp.subtract, perts, cleans)
    distance = jax.tree.map(lambda d: jnp.linalg.norm(d, axis=-1), diff)
    return PerturbationResponse(distance, jnp.linalg.norm(_flat.flatten(diff), axis=-1))


def _shapes(state: State) -> list:
    return [tuple(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(state)]
