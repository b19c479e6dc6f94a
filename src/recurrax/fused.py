"""Sequence-level LSTM and GRU recurrences with a hand-written derivative (the cuDNN/oneDNN technique).

Autodiff of a per-step ``lax.scan`` accumulates the recurrent weight gradient as one small outer
product per step inside the backward loop. Here the derivative is written once for the whole
sequence: the tangent recurrence runs as its own linear scan, and the part that depends on the
weight tangent, ``h_{t-1} @ dW_h`` for every ``t``, is hoisted out of the loop as one large matmul.
JAX transposes this rule for reverse mode, so the backward pass is a reverse scan that only emits
the per-step gate gradients (one ``(N, G) @ (G, H)`` matmul per step), followed by the weight
gradient as a single ``(H, T*N) @ (T*N, G)`` matmul after the loop.

The rule is a ``jax.custom_jvp`` rather than a ``custom_vjp`` so forward mode (``jax.jvp``,
``jax.jacfwd``, used by trajectory Jacobians) keeps working; reverse mode gets the structure above
from JAX's transposition of the linear tangent scan.

All arrays are time-major and batch-flattened: ``zs: (T, N, G*H)``, states ``(N, H)`` (the native kernels'
own arrays are batch-major, ``(N, T, ...)``).

On CPU, for float32, ``recurrax.lstm`` and ``recurrax.gru`` (reset-after) run :func:`lstm_sequence` and
:func:`gru_sequence` in the native kernels of :mod:`recurrax.native`: the same equations, with the forward
pass, and the transpose of the tangent recurrence, each one custom call over the whole sequence. Elsewhere
the LSTM runs the XLA loop below; the GRU's XLA recurrence is opt-in,
``cell._replace(fused=sequence_transition("gru", native=False))``:
it did not beat the generic loop (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from recurrax.cells._common import matmul
from recurrax.core import Array, LSTMState, Params, RNNState, State
from recurrax.native import gru as native_gru
from recurrax.native import lstm as native_lstm
from recurrax.native._primitives import HIDDEN_MULTIPLE, swap
from recurrax.native._primitives import applies as native_applies

__all__ = [
    "gru_recurrence",
    "gru_sequence",
    "gru_tangent_scan",
    "lstm_recurrence",
    "lstm_sequence",
    "lstm_tangent_scan",
    "sequence_transition",
]


def _previous(first: Array, seq: Array, time_axis: int = 0) -> Array:
    """``[first, seq[0], ..., seq[T-2]]`` along ``time_axis``: the value before each step."""
    steps = seq.shape[time_axis]
    return jnp.concatenate(
        [jnp.expand_dims(first, time_axis), jax.lax.slice_in_dim(seq, 0, steps - 1, axis=time_axis)], axis=time_axis
    )


def _hoisted(tangent: Any, primal_seq: Array, w_dot: Any) -> Array | None:
    """``primal_seq @ w_dot`` over all steps at once (``None`` for a symbolic-zero weight tangent)."""
    if isinstance(w_dot, SymbolicZero):
        return tangent
    hw = matmul(primal_seq, w_dot, None)
    return hw if tangent is None else tangent + hw


def _dense(x: Any, like: Array) -> Array:
    return jnp.zeros_like(like) if isinstance(x, SymbolicZero) else x


# ----------------------------------------------------------------------------------------------- LSTM


def _lstm_scan(w_h: Array, zs: Array, h0: Array, c0: Array, unroll: int, keep: bool):
    """The LSTM forward loop; the same equations, in the same order, as ``recurrax.lstm``'s transition."""
    hidden = w_h.shape[0]
    is_g = (jnp.arange(4 * hidden) // hidden) == 2  # the candidate block, g, takes tanh

    def body(carry, z):
        h, c = carry
        a = z + h @ w_h
        # Both functions over the whole gate vector, then one select: one contiguous fusion instead of
        # four strided ones (measured 1.3-1.5x faster loop on CPU); the values are bit-identical.
        act = jnp.where(is_g, jnp.tanh(a), jax.nn.sigmoid(a))
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        out = (h_new, c_new, act) if keep else (h_new, c_new)
        return (h_new, c_new), out

    return jax.lax.scan(body, (h0, c0), zs, unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def lstm_recurrence(w_h: Array, zs: Array, h0: Array, c0: Array, unroll: int = 1) -> tuple[Array, Array]:
    """Runs the LSTM recurrence over projected inputs.

    Args:
      w_h: ``(H, 4H)`` recurrent weights, gate order i, f, g, o.
      zs: ``(T, N, 4H)`` projected inputs ``x W_i + b``.
      h0, c0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.

    Returns:
      ``(hs, cs)``, each ``(T, N, H)``: the state after every step.
    """
    return _lstm_scan(w_h, zs, h0, c0, unroll, keep=False)


@functools.partial(lstm_recurrence.defjvp, symbolic_zeros=True)
def _lstm_jvp(unroll, primals, tangents):
    w_h, zs, h0, c0 = primals
    dw_h, dzs, dh0, dc0 = tangents
    return _lstm_tangents(unroll, w_h, zs, h0, c0, dw_h, None if isinstance(dzs, SymbolicZero) else dzs, dh0, dc0)


def _lstm_tangents(unroll, w_h, zs, h0, c0, dw_h, dzs, dh0, dc0):
    """The LSTM recurrence and its tangent; ``dzs`` is ``None`` for a zero input tangent."""
    hs, cs, acts = _lstm_scan(w_h, zs, h0, c0, unroll, keep=True)
    dpre = _gate_tangent(dzs, h0, hs, dw_h, zs)
    return (hs, cs), lstm_tangent_scan(w_h, acts, cs, c0, dpre, _dense(dh0, h0), _dense(dc0, c0), unroll)


def _gate_tangent(dzs: Array | None, h0: Array, hs: Array, dw_h: Any, like: Array, time_axis: int = 0) -> Array:
    """The tangent of the gate pre-activations that does not flow through the state: ``dzs + h_{t-1} dW_h``."""
    dpre = _hoisted(dzs, _previous(h0, hs, time_axis), dw_h)
    return jnp.zeros_like(like) if dpre is None else dpre


def lstm_tangent_scan(
    w_h: Array, acts: Array, cs: Array, c0: Array, dpre: Array, dh0: Array, dc0: Array, unroll: int = 1
) -> tuple[Array, Array]:
    """The LSTM's tangent recurrence: ``(dhs, dcs)``, each ``(T, N, H)``.

    Args:
      w_h: ``(H, 4H)``; acts: ``(T, N, 4H)`` the activated gates; cs: ``(T, N, H)``; c0: ``(N, H)``.
      dpre: ``(T, N, 4H)`` the gate pre-activations' tangent not flowing through the state.
      dh0, dc0: ``(N, H)`` the initial state's tangent.
    """
    # The coefficients of the linear tangent recurrence, for all steps at once (time-parallel), so the
    # loop below is purely linear: JAX then transposes it into one dot and one fusion per step.
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    tc = jnp.tanh(cs)
    k = jnp.concatenate([i * (1 - i) * g, f * (1 - f) * _previous(c0, cs), i * (1 - g * g), o * (1 - o) * tc], -1)
    b = o * (1 - tc * tc)

    def body(carry, inputs):
        dh, dc = carry
        da, k_t, f_t, b_t = inputs
        k_i, k_f, k_g, k_o = jnp.split(k_t * (da + dh @ w_h), 4, axis=-1)
        dc_new = k_i + k_f + k_g + f_t * dc
        dh_new = k_o + b_t * dc_new
        return (dh_new, dc_new), (dh_new, dc_new)

    return jax.lax.scan(body, (dh0, dc0), (dpre, k, f, b), unroll=unroll)[1]


PROJECTION_CHUNK = {"cpu": 16}
"""Steps projected together in :func:`lstm_sequence`'s forward pass, by JAX backend (``None``: all at once).

Without differentiation, projecting 16 steps at a time inside the loop measured 20-25% faster on CPU at
batch 16-64 than one projection of the whole sequence before it: XLA's CPU runtime gives every call fresh
buffers, and first touching a ``(T, B, 4H)`` one costs page faults (``benchmarks/RESULTS.md``, steps 11-12).
Below ``_MIN_ROWS`` rows per chunk (batch 1) the small matmuls lose, so the whole sequence is projected.
"""
_MIN_ROWS = 128


def _project(w_i: Array, b: Array, xs: Array) -> Array:
    return matmul(xs, w_i, None) + b


def _project_in_chunks(loop, w_i: Array, b: Array, xs: Array, carry: Any):
    """``loop(xs @ w_i + b, carry)`` (every state over time, leaves ``(T, N, ...)``), projecting a chunk at a time.

    The state entering each chunk is the last of the previous chunk's states.
    """
    steps, rows = xs.shape[0], xs.shape[1]
    chunk = PROJECTION_CHUNK.get(jax.default_backend())
    if chunk is None or steps < 2 * chunk or rows * chunk < _MIN_ROWS:
        return loop(_project(w_i, b, xs), carry)
    main = steps - steps % chunk

    def run(carry, x):
        out = loop(_project(w_i, b, x), carry)
        return jax.tree.map(lambda o: o[-1], out), out

    carry, out = jax.lax.scan(run, carry, xs[:main].reshape(main // chunk, chunk, *xs.shape[1:]))
    out = jax.tree.map(lambda o: o.reshape(main, *o.shape[2:]), out)
    if main < steps:
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, run(carry, xs[main:])[1])
    return out


def _projection_tangent(w_i: Array, xs: Array, dw_i: Any, db: Any, dxs: Any) -> Array | None:
    """The tangent of ``xs @ w_i + b``, term by term, so an input without a tangent costs no matmul."""
    dzs = None
    for tangent, term in (
        (dxs, lambda: dxs @ w_i),
        (dw_i, lambda: matmul(xs, dw_i, None)),
        (db, lambda: jnp.broadcast_to(db, (*xs.shape[:-1], db.shape[-1]))),
    ):
        if not isinstance(tangent, SymbolicZero):
            dzs = term() if dzs is None else dzs + term()
    return dzs


NATIVE_FOLD_ROWS = 8
"""From this many rows (batch elements) on, the native kernels fold the input projection into each step's
matmul; with fewer, every step would re-read ``w_i`` for a row or two, so XLA projects the whole sequence
first (LSTM B=1, T=15, I=250, H=208 forward: 0.46 ms folded, against 0.33 ms for XLA's loop)."""


def _native_operands(xs: Array, w_i: Array) -> tuple[Array, Array, Array | None]:
    """``(xs, w_i, zs)`` for a forward kernel from batch-major ``xs: (N, T, I)``: folded into its steps from
    :data:`NATIVE_FOLD_ROWS` rows on, else projected by XLA first (``zs``) with empty ``xs`` and ``w_i``."""
    if xs.shape[0] >= NATIVE_FOLD_ROWS:
        return xs, w_i, None
    return xs[..., :0], w_i[:0], matmul(xs, w_i, None)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7))
def lstm_sequence(
    w_i: Array, b: Array, w_h: Array, xs: Array, h0: Array, c0: Array, unroll: int = 1, native: bool = False
) -> tuple[Array, Array]:
    """:func:`lstm_recurrence` of the projected inputs ``xs @ w_i + b``.

    Args:
      w_i: ``(I, 4H)`` input weights; b: ``(4H,)`` bias; w_h: ``(H, 4H)`` recurrent weights (i, f, g, o).
      xs: ``(T, N, I)`` inputs.
      h0, c0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.
      native: run the recurrence in the native CPU kernel (:mod:`recurrax.native.lstm`; the caller checks
        that it applies), forward and backward; the tangent of forward mode stays an XLA scan.

    Returns:
      ``(hs, cs)``, each ``(T, N, H)``. Evaluated without differentiation by XLA, it projects a few steps
      at a time inside the loop (:data:`PROJECTION_CHUNK`); differentiated, it projects the whole
      sequence first and follows :func:`lstm_recurrence`'s derivative.
    """
    if native:
        xs, w_i, zs = _native_operands(*swap(xs), w_i)
        return swap(*native_lstm.forward(xs, w_i, b, w_h, h0, c0, zs)[:2])
    return _project_in_chunks(lambda zs, s: _lstm_scan(w_h, zs, *s, unroll, keep=False), w_i, b, xs, (h0, c0))


@functools.partial(lstm_sequence.defjvp, symbolic_zeros=True)
def _lstm_sequence_jvp(unroll, native, primals, tangents):
    w_i, b, w_h, xs, h0, c0 = primals
    dw_i, db, dw_h, dxs, dh0, dc0 = tangents
    if not native:
        dzs = _projection_tangent(w_i, xs, dw_i, db, dxs)
        return _lstm_tangents(unroll, w_h, _project(w_i, b, xs), h0, c0, dw_h, dzs, dh0, dc0)
    xs, dxs = swap(xs, dxs)
    xs_k, w_i_k, zs = _native_operands(xs, w_i)
    hs, cs, acts = native_lstm.forward(xs_k, w_i_k, b, w_h, h0, c0, zs, keep_acts=True)
    dpre = _gate_tangent(_projection_tangent(w_i, xs, dw_i, db, dxs), h0, hs, dw_h, acts, time_axis=1)
    dhs, dcs = native_lstm.tangent(w_h, acts, cs, c0, dpre, _dense(dh0, h0), _dense(dc0, c0), unroll)
    return swap(hs, cs), swap(dhs, dcs)


# ------------------------------------------------------------------------------------------------ GRU


def _blocks(a: Array, num: int) -> tuple[Array, ...]:
    """Splits the gate axis into ``num`` separate arrays, so a loop step reads whole blocks (see ``Cell.blocks``)."""
    return tuple(jnp.split(a, num, axis=-1))


def _gru_scan(w_h: Array, b_hn: Array, zs: Array, h0: Array, unroll: int, keep: bool):
    """The GRU (reset-after) forward loop; the same equations as ``recurrax.gru``'s transition."""

    def body(h, z):
        z_r, z_z, z_n = z
        h_r, h_z, h_n = jnp.split(h @ w_h, 3, axis=-1)
        r = jax.nn.sigmoid(z_r + h_r)
        u = jax.nn.sigmoid(z_z + h_z)
        h_n = h_n + b_hn
        n = jnp.tanh(z_n + r * h_n)
        h_new = (1.0 - u) * n + u * h
        return h_new, ((h_new, r, u, n, h_n) if keep else h_new)

    return jax.lax.scan(body, h0, _blocks(zs, 3), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def gru_recurrence(w_h: Array, b_hn: Array, zs: Array, h0: Array, unroll: int = 1) -> Array:
    """Runs the reset-after GRU recurrence over projected inputs.

    Args:
      w_h: ``(H, 3H)`` recurrent weights, gate order r, z, n.
      b_hn: ``(H,)`` the recurrent bias of the candidate, inside the reset gate.
      zs: ``(T, N, 3H)`` projected inputs ``x W_i + b``.
      h0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.

    Returns:
      ``hs: (T, N, H)``, the state after every step.
    """
    return _gru_scan(w_h, b_hn, zs, h0, unroll, keep=False)


@functools.partial(gru_recurrence.defjvp, symbolic_zeros=True)
def _gru_jvp(unroll, primals, tangents):
    w_h, b_hn, zs, h0 = primals
    dw_h, db_hn, dzs, dh0 = tangents
    hs, r, u, n, h_n = _gru_scan(w_h, b_hn, zs, h0, unroll, keep=True)
    dzs = None if isinstance(dzs, SymbolicZero) else dzs
    da, dhn = _gru_weight_tangents(h0, hs, dzs, dw_h, db_hn)
    return hs, gru_tangent_scan(w_h, (r, u, n, h_n), hs, h0, da, dhn, _dense(dh0, h0), unroll)


def _gru_weight_tangents(h0: Array, hs: Array, dzs: Array | None, dw_h: Any, db_hn: Any, time_axis: int = 0):
    """``(da, dhn)`` for :func:`gru_tangent_scan` (``None`` where zero): ``da`` adds to the input side's
    tangent ``dzs`` that of ``h_{t-1} W_hr`` and ``h_{t-1} W_hz`` from the weights; ``dhn`` is the tangent of
    ``h_{t-1} W_hn + b_hn`` from the weights.

    The r and z blocks are a matmul with the whole ``dW_h``, its candidate block masked out: reverse mode
    transposes it into ``h^T @ dzs`` over all three blocks (a third of that matmul wasted), where slicing
    ``dzs`` would copy a ``(T, N, 2H)`` array instead.
    """
    da, dhn = dzs, None
    if not isinstance(dw_h, SymbolicZero):
        hidden, hs_prev = dw_h.shape[0], _previous(h0, hs, time_axis)
        keep_rz = jnp.concatenate([jnp.ones((2 * hidden,), dw_h.dtype), jnp.zeros((hidden,), dw_h.dtype)])
        da = _hoisted(da, hs_prev, dw_h * keep_rz)
        dhn = matmul(hs_prev, dw_h[:, 2 * hidden :], None)
    if not isinstance(db_hn, SymbolicZero):
        bias = jnp.broadcast_to(db_hn, (*hs.shape[:-1], db_hn.shape[-1]))
        dhn = bias if dhn is None else dhn + bias
    return da, dhn


def gru_tangent_scan(
    w_h: Array,
    acts: tuple[Array, ...],
    hs: Array,
    h0: Array,
    da: Array | None,
    dhn: Array | None,
    dh0: Array,
    unroll: int = 1,
) -> Array:
    """The reset-after GRU's tangent recurrence: ``dhs: (T, N, H)``.

    Args:
      w_h: ``(H, 3H)``; acts: ``r, u, n, h_n`` (``h_n = h W_hn + b_hn``), as four ``(T, N, H)`` arrays or
        as ``(T, N, 3H)`` (``r, u, n``) and ``(T, N, H)`` (``h_n``); hs: ``(T, N, H)``; h0: ``(N, H)``.
      da: ``(T, N, 3H)`` the tangent of the pre-activations ``x W_i + b + h_{t-1} [W_hr, W_hz, 0]`` not flowing
        through the state, or ``None`` for zero.
      dhn: ``(T, N, H)`` the tangent of ``h_n`` not flowing through the state, or ``None``.
      dh0: ``(N, H)`` the initial state's tangent.
    """
    r, u, n, h_n = (*jnp.split(acts[0], 3, axis=-1), acts[1]) if len(acts) == 2 else acts
    hs_prev = _previous(h0, hs)
    # Time-parallel coefficients of the linear tangent recurrence
    #   dh' = e + k_r * g_r + k_z * g_z + k_n * g_n + u * dh,  g = dh @ W_h,
    # so the loop holds one dot and one fusion. They stay separate arrays per gate block, so each step
    # reads whole blocks.
    c_n = (1.0 - u) * (1 - n * n)
    c_r = c_n * r * (1 - r) * h_n
    c_z = u * (1 - u) * (hs_prev - n)
    k_g = (c_r, c_z, c_n * r)
    e = [jnp.zeros_like(c) for c in k_g]
    if da is not None:
        e = [c * d for c, d in zip((c_r, c_z, c_n), _blocks(da, 3))]
    if dhn is not None:
        e[2] = e[2] + k_g[2] * dhn

    def body(dh, inputs):
        e_t, k_t, u_t = inputs
        g_r, g_z, g_n = jnp.split(dh @ w_h, 3, axis=-1)
        dh_new = sum(e_i + k_i * g_i for e_i, k_i, g_i in zip(e_t, k_t, (g_r, g_z, g_n))) + u_t * dh
        return dh_new, dh_new

    return jax.lax.scan(body, dh0, (tuple(e), k_g, u), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def gru_sequence(w_i: Array, b: Array, w_h: Array, b_hn: Array, xs: Array, h0: Array, unroll: int = 1) -> Array:
    """The reset-after GRU over ``xs: (T, N, I)`` in the native CPU kernel: ``hs: (T, N, H)``.

    Args:
      w_i: ``(I, 3H)``; b: ``(3H,)``; w_h: ``(H, 3H)``; b_hn: ``(H,)`` (gate order r, z, n); h0: ``(N, H)``.
      unroll: steps per loop iteration of the forward-mode tangent scan.

    The caller checks that the kernel applies (:func:`recurrax.native.applies`). Reverse mode runs the
    native backward pass; forward mode, :func:`gru_tangent_scan`.
    """
    xs, w_i, zs = _native_operands(*swap(xs), w_i)
    return swap(native_gru.forward(xs, w_i, b, w_h, b_hn, h0, zs)[0])[0]


@functools.partial(gru_sequence.defjvp, symbolic_zeros=True)
def _gru_sequence_jvp(unroll, primals, tangents):
    w_i, b, w_h, b_hn, xs, h0 = primals
    dw_i, db, dw_h, db_hn, dxs, dh0 = tangents
    xs, dxs = swap(xs, dxs)
    xs_k, w_i_k, zs = _native_operands(xs, w_i)
    hs, acts, hn = native_gru.forward(xs_k, w_i_k, b, w_h, b_hn, h0, zs, keep_acts=True)
    dzs = _projection_tangent(w_i, xs, dw_i, db, dxs)
    da, dhn = _gru_weight_tangents(h0, hs, dzs, dw_h, db_hn, time_axis=1)
    da, dhn = (jnp.zeros_like(a) if d is None else d for a, d in ((acts, da), (hn, dhn)))
    dhs = native_gru.tangent(w_h, acts, hn, hs, h0, da, dhn, _dense(dh0, h0), unroll)
    return swap(hs)[0], swap(dhs)[0]


# -------------------------------------------------------------------------------------- the scan hook


def _pad_units(a: Array, blocks: int, *, hidden: int, padded: int, axis: int = -1) -> Array:
    """``a`` with each of its ``blocks`` blocks of ``hidden`` units along ``axis`` zero-padded to ``padded``.

    The native kernels tile whole vectors of units. A padded unit of the LSTM or the GRU has zero weights,
    bias and initial state, so its state stays exactly 0 and no real unit reads it (its rows of ``w_h``
    are zero): the real units' values and gradients are those of the unpadded cell.
    """
    if padded == hidden:
        return a
    axis = axis % a.ndim
    a = a.reshape(*a.shape[:axis], blocks, hidden, *a.shape[axis + 1 :])
    widths = [(0, 0)] * a.ndim
    widths[axis + 1] = (0, padded - hidden)
    return jnp.pad(a, widths).reshape(*a.shape[:axis], blocks * padded, *a.shape[axis + 2 :])


DEFAULT_UNROLL = {"cpu": 4}
"""Steps per loop iteration when the caller leaves ``unroll`` at 1, by JAX backend (measured on CPU:
4 beats 1 by ~10-35% forward and ~5% forward+backward, see ``benchmarks/RESULTS.md``); 1 elsewhere."""


def _default_unroll() -> int:
    return DEFAULT_UNROLL.get(jax.default_backend(), 1)


NATIVE_FROM = 128
"""The smallest ``T * N`` (steps times batch) that :func:`sequence_transition` runs in the native kernels by
default. Below it a call's fixed costs (packing the weights, padding) outweigh the kernels: LSTM B=1,
I=250, H=200 forward 0.99 ms native against 0.71 ms in XLA at T=64 (fwd+bwd 2.15 against 1.77 ms),
while at T=1000 (H=64) the kernels win, 1.2 against 1.5 ms (2.6 against 4.0 ms)."""


def sequence_transition(kind: str, native: bool = True, xla: bool = True, native_from: int = NATIVE_FROM):
    """The :attr:`recurrax.Cell.fused` hook for ``kind`` in ``{"lstm", "gru"}`` (the GRU reset-after).

    The hook maps ``(params, xs: (T, *batch, I), state, unroll)`` (time-major inputs, not yet projected)
    to every state over time (leaves ``(T, *batch, ...)``), equal to scanning the cell's ``transition``
    over ``project(params, xs)`` for a cell whose projection is ``xs @ w_i + b`` (or ``xs @ w_i`` without
    ``b``), or returns ``None`` where it does not apply, so the caller falls back to the generic loop.

    Args:
      kind: ``"lstm"`` or ``"gru"``.
      native: run the native CPU kernels where they apply (:func:`recurrax.native.applies`: float32 on CPU),
        with the hidden units zero-padded to a multiple of 16 inside the call where needed.
      xla: elsewhere, run the sequence-level XLA loop with its hand-written derivative (with ``False`` the
        hook returns ``None`` there).
      native_from: the smallest ``T * N`` run natively (:data:`NATIVE_FROM`).

    The hook's ``unroll`` is as in ``lax.scan``, except that 1 (the default) means the backend's
    :data:`DEFAULT_UNROLL`.
    """
    if kind not in ("lstm", "gru"):
        raise ValueError(f"sequence_transition: `kind` must be 'lstm' or 'gru', got {kind!r}.")

    def hook(params: Params, xs: Array, state: State, unroll: int) -> State | None:
        w_i, w_h = params["w_i"], params["w_h"]
        b = params.get("b", jnp.zeros((w_i.shape[-1],), w_i.dtype))
        leaves = [w_i, w_h, b, xs, *jax.tree.leaves(state)]
        if kind == "gru":
            b_hn = params.get("b_hn", jnp.zeros((w_h.shape[0],), w_h.dtype))
            leaves.append(b_hn)
        if len({jnp.result_type(x) for x in leaves}) != 1 or xs.shape[0] == 0:
            return None
        use_native = native and xs.size // max(xs.shape[-1], 1) >= native_from and native_applies(w_h, *leaves)
        if not (use_native or xla):
            return None
        steps, batch = xs.shape[0], xs.shape[1:-1]
        unroll = steps if unroll is True else _default_unroll() if unroll in (False, 1) else int(unroll)
        flat = lambda a: a.reshape((-1, a.shape[-1]))  # noqa: E731
        xs_flat = xs.reshape((steps, -1, xs.shape[-1]))
        unflat = lambda a: a.reshape((steps, *batch, a.shape[-1]))  # noqa: E731
        if use_native:
            hidden, gates = w_h.shape[0], 4 if kind == "lstm" else 3
            padded = -(-hidden // HIDDEN_MULTIPLE) * HIDDEN_MULTIPLE
            pad = functools.partial(_pad_units, hidden=hidden, padded=padded)
            w_i, b = pad(w_i, gates), pad(b, gates)
            w_h = pad(pad(w_h, gates), 1, axis=0)
            h0 = pad(flat(state.h), 1)
            crop = lambda a: unflat(a[..., :hidden])  # noqa: E731
            if kind == "lstm":
                hs, cs = lstm_sequence(w_i, b, w_h, xs_flat, h0, pad(flat(state.c), 1), unroll, True)
                return LSTMState(h=crop(hs), c=crop(cs))
            return RNNState(h=crop(gru_sequence(w_i, b, w_h, pad(b_hn, 1), xs_flat, h0, unroll)))
        if kind == "lstm":
            hs, cs = lstm_sequence(w_i, b, w_h, xs_flat, flat(state.h), flat(state.c), unroll, False)
            return LSTMState(h=unflat(hs), c=unflat(cs))
        zs = _project(w_i, b, xs_flat)
        return RNNState(h=unflat(gru_recurrence(w_h, b_hn, zs, flat(state.h), unroll)))

    return hook
