"""Step Jacobians ``d s_{t+1} / d s_t`` and input Jacobians ``d s_{t+1} / d x_t``, with the state's fields kept.

Blocks are a state of states, ``blocks.<output field>.<input field>``, as ``jax.jacfwd`` arranges a
state-to-state derivative. For an LSTM (``LSTMState(h, c)``)::

    jac.blocks.h.h  # d h' / d h   (P, P)         jac.blocks.h.c  # d h' / d c   (P, H)
    jac.blocks.c.h  # d c' / d h   (H, P)         jac.blocks.c.c  # d c' / d c   (H, H)
    jac.matrix      # the whole (S, S) matrix on the flat state [h, c]

For single-vector cells (``RNNState(h)``) there is one block, ``jac.blocks.h.h``.

Complex fields (the LRU's ``x``) are taken in their real view (see :func:`recurrax.dynamics.flatten`):
``Re`` and ``Im`` of each unit interleaved, so ``jac.blocks.x.x`` of ``LRUState(x, y)`` with ``N``
complex units is ``(2N, 2N)`` real, block-diagonal of ``[[Re lambda, -Im lambda], [Im lambda, Re lambda]]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.trajectory import trajectory


class StepJacobian(NamedTuple):
    """``d s' / d s``: ``blocks.<out>.<in>`` (``(n_out, n_in)``; ``2 n`` for a complex field) and ``matrix: (S, S)``.

    Along a trajectory every leaf gains a leading time axis ``T``.
    """

    blocks: Any
    matrix: Array


class InputJacobian(NamedTuple):
    """``d s' / d x``: ``blocks.<out>`` (``(n_out, I)`` each) and the flat ``matrix: (S, I)``."""

    blocks: Any
    matrix: Array


@_flat.on_steps
def step_jacobian(cell: Cell, params: Params, state: State, x: Array) -> StepJacobian:
    """``d step(params, state, x) / d state`` at one state ``(leaves (n,))`` and input ``x: (I,)``."""
    fn = "dynamics.step_jacobian"
    x = _flat.check_point(fn, cell, params, state, x)
    matrix = jax.jacfwd(_flat.step_fn(cell, params, state))(_flat.flatten(state), cell.project(params, x))
    return StepJacobian(_flat.blocks(state, matrix), matrix)


@_flat.on_steps
def input_jacobian(cell: Cell, params: Params, state: State, x: Array) -> InputJacobian:
    """``d step(params, state, x) / d x`` at one state and input ``x: (I,)``."""
    fn = "dynamics.input_jacobian"
    x = _flat.check_point(fn, cell, params, state, x)
    matrix = jax.jacfwd(lambda x: _flat.flatten(cell.step(params, state, x)))(x)
    return InputJacobian(_flat.blocks(state, matrix, x), matrix)


@_flat.on_steps
def step_jacobians(cell: Cell, params: Params, xs: Array, state: State | None = None) -> StepJacobian:
    """The step Jacobians along the trajectory driven by ``xs: (T, I)``.

    Returns:
      A :class:`StepJacobian` with a leading time axis: ``matrix: (T, S, S)``, where entry ``t`` is
      ``d s_{t+1} / d s_t`` at the state before ``xs[t]`` (see :func:`trajectory`).
    """
    states = trajectory(cell, params, xs, state)
    return jax.vmap(lambda s, x: step_jacobian(cell, params, s, x))(_drop_last(states), xs)


@_flat.on_steps
def input_jacobians(cell: Cell, params: Params, xs: Array, state: State | None = None) -> InputJacobian:
    """The input Jacobians ``d s_{t+1} / d x_t`` along the trajectory driven by ``xs``: ``matrix: (T, S, I)``."""
    states = trajectory(cell, params, xs, state)
    return jax.vmap(lambda s, x: input_jacobian(cell, params, s, x))(_drop_last(states), xs)


def _drop_last(states: State) -> State:
    return jax.tree.map(lambda s: s[:-1], states)
