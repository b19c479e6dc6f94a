"""Trajectories: every state of a run, the initial one included."""

from __future__ import annotations

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.scan import scan


@_flat.on_steps
def trajectory(cell: Cell, params: Params, xs: Array, state: State | None = None) -> State:
    """Every state of ``cell`` driven by ``xs``, the initial state first.

    A thin layer over :func:`recurrax.scan` (``return_states=True, include_initial=True``).

    Args:
      cell, params: the cell and its params.
      xs: one example's inputs ``(T, I)``; for an autonomous run pass a constant input, e.g. zeros.
      state: the initial state (one example, leaves ``(n,)``); zeros when ``None``.

    Returns:
      The states, leaves ``(T + 1, n)``: index ``t`` is the state before ``xs[t]`` is consumed
      (index 0 the initial state, index ``T`` the final one).
    """
    fn = "dynamics.trajectory"
    xs = _flat.check_inputs(fn, cell, params, xs)
    state = _flat.initial_state(fn, cell, params, state)
    return scan(cell, params, xs, state, return_states=True, include_initial=True)[2]
