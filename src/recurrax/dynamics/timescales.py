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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrax import core
from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.fixed_points import eigen_time_constants
from recurrax.dynamics.trajectory import trajectory

# (number of gate blocks, index of the retention gate's block, whether the retained fraction is 1 - gate)
_GATES = {"lstm": (4, 1, False), "gru": (3, 1, False), "mgu": (2, 0, True)}
_FAMILIES = (*_GATES, "lru")
_UNSUPPORTED = ("w_peep", "w_proj", "ln_i", "ln_h")
RETAINED = {"lstm": "c", "gru": "h", "mgu": "h", "lru": "x"}  # the state field each family's gate keeps


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
    parts = _flat.stack_parts(cell)
    if parts is not None:
        return _stack_gates(fn, cell, parts, params, state, x)
    if cell.name not in _FAMILIES:
        raise ValueError(f"{fn}: gate timescales are defined for {sorted(_FAMILIES)}, got a {cell.name!r} cell.")
    built = core.built_with(cell)
    if built is not None and built[1].get("gate_activation", jax.nn.sigmoid) is not jax.nn.sigmoid:
        raise ValueError(
            f"{fn}: the gates are recomputed with the sigmoid; this {cell.name} has another `gate_activation`."
        )
    extra = [k for k in _UNSUPPORTED if k in params]
    if extra:
        raise ValueError(f"{fn}: only plain {cell.name} cells are supported, these params are not: {extra}.")
    x = _flat.check_point(fn, cell, params, state, x)
    if cell.name == "lru":
        # |lambda| = exp(-exp(nu_log)) (Orvieto et al., 2023): the input never gates the LRU's memory.
        return jnp.exp(-jnp.exp(params["nu_log"]))
    num_gates, block, complement = _GATES[cell.name]
    z = cell.project(params, x)
    hidden = z.shape[-1] // num_gates
    cut = slice(block * hidden, (block + 1) * hidden)
    gate = jax.nn.sigmoid(z[cut] + state.h @ params["w_h"][:, cut])
    return 1.0 - gate if complement else gate


@_flat.on_steps
def gate_timescales(cell: Cell, params: Params, xs: Array, state: State | None = None) -> GateTimescales:
    """The retention gate at every step of the run driven by ``xs: (T, I)``, as timescales."""
    states = trajectory(cell, params, xs, state)
    gate = jax.vmap(lambda s, x: retention_gate(cell, params, s, x))(jax.tree.map(lambda s: s[:-1], states), xs)
    return GateTimescales(gate, jax.tree.map(gate_tau, gate), jax.tree.map(lambda g: gate_tau(g.mean(0)), gate))


def _stack_gates(fn: str, cell: Cell, parts, params: Params, state: State, x: Array) -> tuple[Array, ...]:
    """Each layer's retention gate at one step of a stack, from the input that layer reads at that step."""
    cells, residual = parts
    y = _flat.check_point(fn, cell, params, state, x)
    gates = []
    for i, (c, p, s) in enumerate(zip(cells, params, state)):
        try:
            gates.append(retention_gate(c, p, s, y))
        except ValueError as err:
            raise ValueError(f"{fn}: layer {i} of {cell.name}: {str(err).removeprefix(fn + ': ')}") from err
        out = c.output(c.step(p, s, y))
        y = out + y if residual and i > 0 else out
    return tuple(gates)


def gate_tau(gate: Array) -> Array:
    """``-1 / log g``: the steps a memory kept at rate ``g`` per step takes to fall by ``e`` (``inf`` at ``g = 1``)."""
    return -1.0 / jnp.log(gate)


def jacobian_timescales(matrix: Array) -> Array:
    """The time constants ``-1 / log |lambda|`` of a step Jacobian ``matrix: (..., S, S)``, slowest first."""
    matrix = _flat.check_square("dynamics.jacobian_timescales", matrix, batched=True)
    return -jnp.sort(-eigen_time_constants(jnp.linalg.eigvals(matrix)))
