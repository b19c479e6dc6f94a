"""``cudnn_lstm``: the plain LSTM in cuDNN, through ``jax.experimental.rnn.lstm`` (GPU, float32).

cuDNN takes the weights as one flat vector, per layer and direction ``W_ih (4H, I)``, ``W_hh (4H, H)``, then
``b_ih (4H,)``, ``b_hh (4H,)``, gate order i, f, g, o, as PyTorch; :func:`pack` lays recurrax's params out so
(checked on CPU against ``jax.experimental.rnn.lstm_ref``). It reads ``lengths`` itself. It returns the outputs
and the final state only, so it cannot serve ``return_states`` (no ``c`` over time), and its derivative is a
``custom_vjp``: reverse mode only (``jax.jvp`` needs ``backend="xla_lstm"``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrax.backends.base import (
    Backend,
    Request,
    Resets,
    checkpointed,
    first_reason,
    needs_kind,
    needs_one_dtype,
    needs_platform,
    refuses_resets,
    valid_mask,
    where_valid,
)
from recurrax.backends.xla import gate_params
from recurrax.core import Array, Cell, LSTMState, Params, State

__all__ = ["CUDNN_LSTM", "pack"]


def pack(params: Params) -> Array:
    """recurrax's plain LSTM params as cuDNN's flat weight vector (one layer, one direction)."""
    w_i, b, w_h = gate_params("lstm", params)
    return jnp.concatenate([w_i.T.ravel(), w_h.T.ravel(), b, jnp.zeros_like(b)])


def cudnn_lstm(xs: Array, h0: Array, c0: Array, weights: Array, lengths: Array) -> tuple[Array, Array, Array]:
    """``jax.experimental.rnn.lstm`` for one layer, one direction: ``(ys (N, T, H), h_T (N, H), c_T (N, H))``."""
    from jax.experimental import rnn

    hidden = h0.shape[-1]
    ys, h, c = rnn.lstm(xs, h0[None], c0[None], weights, lengths, xs.shape[-1], hidden, 1, 0.0, False)
    return ys, h[0], c[0]


def run(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State,
    lengths: Array | None,
    resets: Resets | None,
    req: Request,
    lstm=cudnn_lstm,
):
    """The backend's run; ``lstm`` is :func:`cudnn_lstm` (the tests pass ``lstm_ref`` in its layout on CPU)."""
    steps, batch = xs.shape[0], xs.shape[1:-1]
    rows = math.prod(batch)
    flat = jnp.full((rows,), steps, jnp.int32) if lengths is None else lengths.reshape(rows).astype(jnp.int32)

    def go(params, xs, h0, c0):
        xs_bm = jnp.swapaxes(xs.reshape(steps, rows, xs.shape[-1]), 0, 1)
        # A sequence of length 0 is run for one step and its state put back below (cuDNN wants lengths >= 1).
        ys, h, c = lstm(xs_bm, h0, c0, pack(params), jnp.maximum(flat, 1))
        return jnp.swapaxes(ys, 0, 1), h, c

    h0, c0 = (leaf.reshape(rows, leaf.shape[-1]) for leaf in state)
    ys, h, c = checkpointed(go, req.remat)(params, xs, h0, c0)
    ys = ys.reshape(steps, *batch, ys.shape[-1])
    final = LSTMState(h=h.reshape(state.h.shape), c=c.reshape(state.c.shape))
    if lengths is not None:
        final = jax.tree.map(lambda f, s0: where_valid(lengths > 0, f, s0), final, state)
        ys = where_valid(valid_mask(steps, lengths), ys, jnp.zeros_like(ys))
    return final, ys, None


def _supports(req: Request) -> str | None:
    return first_reason(
        needs_kind(req, "lstm", "cudnn_lstm"),
        needs_platform(req, "gpu", "cudnn_lstm"),
        needs_one_dtype(req, "cudnn_lstm", ("float32",)),
        refuses_resets(req, "cudnn_lstm", "cuDNN's RNN has no input that restores the state inside a sequence"),
        "'cudnn_lstm' cannot serve return_states: cuDNN returns no cell state c over time"
        if req.return_states
        else None,
    )


CUDNN_LSTM = Backend(
    name="cudnn_lstm",
    supports=_supports,
    prefers=lambda req: True,
    run=run,
    forward_mode=False,
    description="the plain LSTM in cuDNN via jax.experimental.rnn (GPU, float32; reverse-mode derivatives only)",
)
