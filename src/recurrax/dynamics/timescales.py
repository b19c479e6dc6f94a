"""Memory timescales: from the gates (how much of the old state a step keeps) and from Jacobian eigenvalues.

A unit that keeps a fraction ``g`` of its value each step forgets with time constant
``tau = -1 / log g`` steps (``g = e^{-1/tau}``). The retention gate ``g`` is, per family:

- LSTM: the forget gate ``f`` (``c' = f c + i g``);
- GRU: the update gate ``u`` (``h' = (1 - u) n + u h``);
- MGU: ``1 - f`` (``h' = (1 - f) h + f n``);
- LRU: ``|lambda|`` of each complex unit (``x' = lambda x + gamma B u``), constant over the run.

The gates are recomputed from the cell's own ``project`` and the recurrent weights ``w_h`` in the
documented gate order, in the params' dtype; only the plain variants are supported (peepholes,
layer norm and projections raise). A stack (:func:`recurrax.as_cell` of a ``stacked`` layer) gives a tuple
with one entry per layer, each computed from what that layer reads at that step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax import core
from recurrax.core import Array, Cell, Params, State, next_input
from recurrax.dynamics import _flat
from recurrax.dynamics.fixed_points import eigen_time_constants
from recurrax.dynamics.trajectory import trajectory

# (number of gate blocks, index of the retention gate's block, whether the retained fraction is 1 - gate)
_GATES = {"lstm": (4, 1, False), "gru": (3, 1, False), "mgu": (2, 0, True)}
RETAINED = {"lstm": "c", "gru": "h", "mgu": "h", "lru": "x"}  # the state field each family's gate keeps
_UNSUPPORTED = ("w_peep", "w_proj", "ln_i", "ln_h")


def unsupported(cell: Cell, params: Params) -> str | None:
    """Why the gates of ``cell`` (not a stack) cannot be recomputed, or ``None`` when they can."""
    if cell.name not in RETAINED:
        return f"gate timescales are defined for {sorted(RETAINED)}, got a {cell.name!r} cell"
    built = core.built_with(cell)
    if built is None:
        return (
            f"this {cell.name} was not built by recurrax.{cell.name} or had a function replaced: its gates are unknown"
        )
    if built[1].get("gate_activation", jax.nn.sigmoid) is not jax.nn.sigmoid:
        return f"the gates are recomputed with the sigmoid; this {cell.name} has another `gate_activation`"
    extra = [k for k in _UNSUPPORTED if k in params]
    if extra:
        return f"only plain {cell.name} cells are supported, these params are not: {extra}"
    return None


class GateTimescales(NamedTuple):
    """Retention gates and their timescales along a trajectory.

    For a stack each attribute is a tuple with one entry per layer (``unit_tau[1]`` is the second layer's).

    Attributes:
      gate: ``(T, H)``, the retained fraction of each unit at each step (``(T, N)`` for the LRU's ``N`` units).
      tau: ``(T, H)``, ``-1 / log gate`` in steps.
      unit_tau: ``(H,)``, the timescale of each unit's mean gate over the run, ``-1 / log mean_t gate``.
    """

    gate: Array
    tau: Array
    unit_tau: Array


@_flat.on_steps
def retention_gate(cell: Cell, params: Params, state: State, x: Array) -> Array:
    """The fraction of each unit's memory kept by one step, ``(H,)`` (LRU: ``(N,)``; see the module docstring);
    for a stack, a tuple of them, one per layer."""
    fn = "dynamics.retention_gate"
    x = _flat.check_point(fn, cell, params, state, x)
    return gates(fn, cell, params, state, x, skip=False)


@_flat.on_steps
def gate_timescales(cell: Cell, params: Params, xs: Array, state: State | None = None) -> GateTimescales:
    """The retention gate at every step of the run driven by ``xs: (T, I)``, as timescales."""
    gate = gates_over(cell, params, xs, state, skip=False)
    return GateTimescales(gate, jax.tree.map(gate_tau, gate), jax.tree.map(lambda g: gate_tau(g.mean(0)), gate))


def gates_over(cell: Cell, params: Params, xs: Array, state: State | None, *, skip: bool) -> Any:
    """:func:`gates` at every step of the run driven by ``xs: (T, I)``, leaves ``(T, H)``."""
    states = trajectory(cell, params, xs, state)
    before = jax.tree.map(lambda s: s[:-1], states)
    return jax.vmap(lambda s, x: gates("dynamics.gate_timescales", cell, params, s, x, skip=skip))(before, xs)


def gates(fn: str, cell: Cell, params: Params, state: State, x: Array, *, skip: bool) -> Any:
    """The retention gate of one step (``(H,)``), or for a stack a tuple per layer, each from the input that
    layer reads at that step. A cell whose gates cannot be recomputed (:func:`unsupported`) raises, or with
    ``skip`` gives ``None``."""
    parts = _flat.stack_parts(cell)
    if parts is not None:
        cells, residual = parts
        out, y = [], x
        for i, (c, p, s) in enumerate(zip(cells, params, state)):
            try:
                out.append(gates(fn, c, p, s, y, skip=skip))
            except ValueError as err:
                raise ValueError(f"{fn}: layer {i} of {cell.name}: {str(err).removeprefix(fn + ': ')}") from err
            new = c.output(c.step(p, s, y))
            y = next_input(new, y, residual=residual, layer=i)
        return tuple(out)
    reason = unsupported(cell, params)
    if reason is not None:
        if skip:
            return None
        raise ValueError(f"{fn}: {reason}.")
    if cell.name == "lru":
        # |lambda| = exp(-exp(nu_log)) (Orvieto et al., 2023): the input never gates the LRU's memory.
        return jnp.exp(-jnp.exp(params["nu_log"]))
    num_gates, block, complement = _GATES[cell.name]
    z = cell.project(params, x)
    hidden = z.shape[-1] // num_gates
    cut = slice(block * hidden, (block + 1) * hidden)
    gate = jax.nn.sigmoid(z[cut] + state.h @ params["w_h"][:, cut])
    return 1.0 - gate if complement else gate


def gate_tau(gate: Array) -> Array:
    """``-1 / log g``: the steps a memory kept at rate ``g`` per step takes to fall by ``e`` (``inf`` at ``g = 1``)."""
    return -1.0 / jnp.log(gate)


def jacobian_timescales(matrix: Array) -> Array:
    """The time constants ``-1 / log |lambda|`` of a step Jacobian ``matrix: (..., S, S)``, slowest first."""
    matrix = _flat.check_square("dynamics.jacobian_timescales", matrix, batched=True)
    return -jnp.sort(-eigen_time_constants(jnp.linalg.eigvals(matrix)))
