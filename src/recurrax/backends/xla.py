"""``xla_lstm`` and ``xla_gru``: sequence-level LSTM and GRU recurrences with a hand-written derivative.

This is the cuDNN/oneDNN technique in XLA. Autodiff of a per-step ``lax.scan`` accumulates the recurrent weight
gradient as one small outer product per step inside the backward loop. Here the derivative is written once for the
whole sequence: the tangent recurrence runs as its own linear scan, and the part that depends on the weight
tangent, ``h_{t-1} @ dW_h`` for every ``t``, is hoisted out of the loop as one large matmul. JAX transposes this
rule for reverse mode, so the backward pass is a reverse scan that only emits the per-step gate gradients (one
``(N, G) @ (G, H)`` matmul per step), followed by the weight gradient as a single ``(H, T*N) @ (T*N, G)`` matmul
after the loop.

The rule is a ``jax.custom_jvp`` rather than a ``custom_vjp`` so forward mode (``jax.jvp``, ``jax.jacfwd``, used
by trajectory Jacobians) keeps working; reverse mode gets the structure above from JAX's transposition of the
linear tangent scan.

Arrays are time-major and batch-flattened: ``zs: (T, N, G*H)``, states ``(N, H)``. Their matmuls keep the time
and batch axes apart (:func:`seq_matmul`), so a sharded batch stays sharded. The native CPU kernels
(:mod:`recurrax.backends.cpu`) reuse these equations as their references and forward-mode tangents.

``auto`` runs ``xla_lstm`` for the plain LSTM wherever no faster backend applies; ``xla_gru`` runs only when
named: it did not beat the sequential loop on CPU (``benchmarks/RESULTS.md``, step 9).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from recurrax.backends import tuning
from recurrax.backends.base import (
    Backend,
    Request,
    Resets,
    checkpointed,
    first_reason,
    from_states,
    needs_kind,
    needs_one_dtype,
    where_valid,
)
from recurrax.cells._common import matmul
from recurrax.core import Array, Cell, LSTMState, Params, RNNState, State

__all__ = [
    "GRU",
    "LSTM",
    "gru_recurrence",
    "gru_tangent_scan",
    "lstm_recurrence",
    "lstm_sequence",
    "lstm_tangent_scan",
]


def seq_matmul(x: Array, w: Array, batch_major: bool = False) -> Array:
    """``x @ w`` over a sequence ``x: (T, N, K)`` (``(N, T, K)`` if ``batch_major``).

    Batch-major, the leading axes merge into one row axis (:func:`recurrax.cells._common.matmul`: XLA's CPU
    backend then copies no transposed cotangent for the weight gradient, RESULTS step 14), and a sharded batch
    axis stays sharded. Time-major, merging would put time first and gather a sharded batch onto every device,
    so the axes stay apart.
    """
    if batch_major or x.ndim <= 2:
        return matmul(x, w, None)
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def previous(first: Array, seq: Array, time_axis: int = 0, reset: tuple[Array, Array] | None = None) -> Array:
    """``[first, seq[0], ..., seq[T-2]]`` along ``time_axis``: the value before each step.

    With ``reset = (mask, restored)`` (``mask`` of ``seq``'s leading two axes, ``restored`` of ``first``'s shape),
    the value before a step that resets is ``restored``: what the step reads.
    """
    steps = seq.shape[time_axis]
    prev = jnp.concatenate(
        [jnp.expand_dims(first, time_axis), jax.lax.slice_in_dim(seq, 0, steps - 1, axis=time_axis)], axis=time_axis
    )
    if reset is None:
        return prev
    mask, restored = reset
    return jnp.where(mask[..., None], jnp.expand_dims(restored, time_axis), prev)


def _with_mask(seq: Any, reset: tuple | None) -> tuple:
    """A scan's inputs ``(seq, mask)``, the mask ``None`` without resets."""
    return seq, None if reset is None else reset[0]


def _hoisted(tangent: Any, primal_seq: Array, w_dot: Any, batch_major: bool) -> Array | None:
    """``primal_seq @ w_dot`` over all steps at once (``None`` for a symbolic-zero weight tangent)."""
    if isinstance(w_dot, SymbolicZero):
        return tangent
    hw = seq_matmul(primal_seq, w_dot, batch_major)
    return hw if tangent is None else tangent + hw


def dense(x: Any, like: Array) -> Array:
    return jnp.zeros_like(like) if isinstance(x, SymbolicZero) else x


# ----------------------------------------------------------------------------------------------- LSTM
#
# Resets: ``reset`` is ``None`` or ``(mask, h_r, c_r)`` with ``mask: (T, N)`` (the driver's
# :class:`~recurrax.backends.base.Resets`, batch flattened) and the restored state ``(N, H)``: a step whose mask
# is set reads the restored state instead of the previous one, and so do its derivatives.


def lstm_scan(w_h: Array, zs: Array, h0: Array, c0: Array, unroll: int, keep: bool, reset: tuple | None = None):
    """The LSTM forward loop; the same equations, in the same order, as ``recurrax.lstm``'s transition."""
    hidden = w_h.shape[0]
    is_g = (jnp.arange(4 * hidden) // hidden) == 2  # the candidate block, g, takes tanh

    def body(carry, inputs):
        (h, c), (z, m) = carry, inputs
        if m is not None:
            h, c = where_valid(m, reset[1], h), where_valid(m, reset[2], c)
        a = z + h @ w_h
        # Both functions over the whole gate vector, then one select: one contiguous fusion instead of
        # four strided ones (measured 1.3-1.5x faster loop on CPU); the values are bit-identical.
        act = jnp.where(is_g, jnp.tanh(a), jax.nn.sigmoid(a))
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        out = (h_new, c_new, act) if keep else (h_new, c_new)
        return (h_new, c_new), out

    return jax.lax.scan(body, (h0, c0), _with_mask(zs, reset), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def lstm_recurrence(
    w_h: Array, zs: Array, h0: Array, c0: Array, unroll: int = 1, reset: tuple | None = None
) -> tuple[Array, Array]:
    """Runs the LSTM recurrence over projected inputs.

    Args:
      w_h: ``(H, 4H)`` recurrent weights, gate order i, f, g, o.
      zs: ``(T, N, 4H)`` projected inputs ``x W_i + b``.
      h0, c0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.
      reset: ``None`` or ``(mask (T, N), h_r, c_r (N, H))``: where the state is restored before a step.

    Returns:
      ``(hs, cs)``, each ``(T, N, H)``: the state after every step.
    """
    return lstm_scan(w_h, zs, h0, c0, unroll, keep=False, reset=reset)


@functools.partial(lstm_recurrence.defjvp, symbolic_zeros=True)
def _lstm_jvp(unroll, primals, tangents):
    w_h, zs, h0, c0, reset = primals
    dw_h, dzs, dh0, dc0, dreset = tangents
    dzs = None if isinstance(dzs, SymbolicZero) else dzs
    return _lstm_tangents(unroll, w_h, zs, h0, c0, dw_h, dzs, dh0, dc0, reset, dreset)


def _lstm_tangents(unroll, w_h, zs, h0, c0, dw_h, dzs, dh0, dc0, reset=None, dreset=None):
    """The LSTM recurrence and its tangent; ``dzs`` is ``None`` for a zero input tangent."""
    hs, cs, acts = lstm_scan(w_h, zs, h0, c0, unroll, keep=True, reset=reset)
    dpre = gate_tangent(dzs, h0, hs, dw_h, zs, reset=None if reset is None else reset[:2])
    return (hs, cs), lstm_tangent_scan(
        w_h,
        acts,
        cs,
        c0,
        dpre,
        dense(dh0, h0),
        dense(dc0, c0),
        unroll,
        *reset_tangents(reset, dreset, read=2),
    )


def reset_tangents(reset: tuple | None, dreset: tuple | None, read: int):
    """``(residual, linear)`` operands of a tangent scan from ``reset = (mask, *restored)`` and its tangent:
    ``(mask, restored[read])`` (the field the scan's coefficients read) and the restored state's tangents (zeros
    where symbolic); ``(None, None)`` without resets."""
    if reset is None:
        return None, None
    return (reset[0], reset[read]), tuple(dense(dreset[k], reset[k]) for k in range(1, len(reset)))


def gate_tangent(
    dzs: Array | None, h0: Array, hs: Array, dw_h: Any, like: Array, time_axis: int = 0, reset: tuple | None = None
) -> Array:
    """The tangent of the gate pre-activations that does not flow through the state: ``dzs + h_{t-1} dW_h``
    (``reset``: ``(mask, h_r)``)."""
    dpre = _hoisted(dzs, previous(h0, hs, time_axis, reset), dw_h, batch_major=time_axis == 1)
    return jnp.zeros_like(like) if dpre is None else dpre


def lstm_tangent_scan(
    w_h: Array,
    acts: Array,
    cs: Array,
    c0: Array,
    dpre: Array,
    dh0: Array,
    dc0: Array,
    unroll: int = 1,
    reset: tuple[Array, Array] | None = None,
    dreset: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """The LSTM's tangent recurrence: ``(dhs, dcs)``, each ``(T, N, H)``.

    Args:
      w_h: ``(H, 4H)``; acts: ``(T, N, 4H)`` the activated gates; cs: ``(T, N, H)``; c0: ``(N, H)``.
      dpre: ``(T, N, 4H)`` the gate pre-activations' tangent not flowing through the state.
      dh0, dc0: ``(N, H)`` the initial state's tangent.
      reset: ``None`` or ``(mask (T, N), c_r (N, H))``; dreset: then the restored state's tangent ``(dh_r, dc_r)``.
    """
    # The coefficients of the linear tangent recurrence, for all steps at once (time-parallel), so the
    # loop below is purely linear: JAX then transposes it into one dot and one fusion per step.
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    tc = jnp.tanh(cs)
    k = jnp.concatenate(
        [i * (1 - i) * g, f * (1 - f) * previous(c0, cs, reset=reset), i * (1 - g * g), o * (1 - o) * tc], -1
    )
    b = o * (1 - tc * tc)

    def body(carry, inputs):
        (dh, dc), ((da, k_t, f_t, b_t), m) = carry, inputs
        if m is not None:
            dh, dc = where_valid(m, dreset[0], dh), where_valid(m, dreset[1], dc)
        k_i, k_f, k_g, k_o = jnp.split(k_t * (da + dh @ w_h), 4, axis=-1)
        dc_new = k_i + k_f + k_g + f_t * dc
        dh_new = k_o + b_t * dc_new
        return (dh_new, dc_new), (dh_new, dc_new)

    return jax.lax.scan(body, (dh0, dc0), _with_mask((dpre, k, f, b), reset), unroll=unroll)[1]


def _project(w_i: Array, b: Array, xs: Array) -> Array:
    return seq_matmul(xs, w_i) + b


def _project_in_chunks(loop, w_i: Array, b: Array, xs: Array, carry: Any, chunk: int | None, mask: Array | None):
    """``loop(xs @ w_i + b, carry, mask)`` (every state over time, leaves ``(T, N, ...)``), projecting ``chunk``
    steps at a time (:data:`recurrax.backends.tuning.PROJECTION_CHUNK`; ``None``: all at once).

    The state entering each chunk is the last of the previous chunk's states; ``mask: (T, N)`` (or ``None``) is
    cut into the same chunks.
    """
    steps, rows = xs.shape[0], xs.shape[1]
    if chunk is None or steps < 2 * chunk or rows * chunk < tuning.PROJECTION_CHUNK_MIN_ROWS:
        return loop(_project(w_i, b, xs), carry, mask)
    main = steps - steps % chunk

    def run(carry, inputs):
        x, m = inputs
        out = loop(_project(w_i, b, x), carry, m)
        return jax.tree.map(lambda o: o[-1], out), out

    cut = lambda a: None if a is None else a[:main].reshape(main // chunk, chunk, *a.shape[1:])  # noqa: E731
    carry, out = jax.lax.scan(run, carry, (cut(xs), cut(mask)))
    out = jax.tree.map(lambda o: o.reshape(main, *o.shape[2:]), out)
    if main < steps:
        rest = (xs[main:], None if mask is None else mask[main:])
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, run(carry, rest)[1])
    return out


def projection_tangent(w_i: Array, xs: Array, dw_i: Any, db: Any, dxs: Any, batch_major: bool = False) -> Array | None:
    """The tangent of ``xs @ w_i + b``, term by term, so an input without a tangent costs no matmul."""
    dzs = None
    for tangent, term in (
        (dxs, lambda: dxs @ w_i),
        (dw_i, lambda: seq_matmul(xs, dw_i, batch_major)),
        (db, lambda: jnp.broadcast_to(db, (*xs.shape[:-1], db.shape[-1]))),
    ):
        if not isinstance(tangent, SymbolicZero):
            dzs = term() if dzs is None else dzs + term()
    return dzs


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7))
def lstm_sequence(
    w_i: Array,
    b: Array,
    w_h: Array,
    xs: Array,
    h0: Array,
    c0: Array,
    unroll: int = 1,
    chunk: int | None = None,
    reset: tuple | None = None,
) -> tuple[Array, Array]:
    """:func:`lstm_recurrence` of the projected inputs ``xs @ w_i + b``.

    Args:
      w_i: ``(I, 4H)`` input weights; b: ``(4H,)`` bias; w_h: ``(H, 4H)`` recurrent weights (i, f, g, o).
      xs: ``(T, N, I)`` inputs.
      h0, c0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.
      chunk: steps projected together without differentiation (``None``: the whole sequence first).
      reset: ``None`` or ``(mask (T, N), h_r, c_r (N, H))``, as :func:`lstm_recurrence`'s.

    Returns:
      ``(hs, cs)``, each ``(T, N, H)``. Evaluated without differentiation, it projects ``chunk`` steps at a time
      inside the loop; differentiated, it projects the whole sequence first and follows :func:`lstm_recurrence`'s
      derivative.
    """

    def loop(zs, s, m):
        return lstm_scan(w_h, zs, *s, unroll, keep=False, reset=None if reset is None else (m, *reset[1:]))

    return _project_in_chunks(loop, w_i, b, xs, (h0, c0), chunk, None if reset is None else reset[0])


@functools.partial(lstm_sequence.defjvp, symbolic_zeros=True)
def _lstm_sequence_jvp(unroll, chunk, primals, tangents):
    w_i, b, w_h, xs, h0, c0, reset = primals
    dw_i, db, dw_h, dxs, dh0, dc0, dreset = tangents
    dzs = projection_tangent(w_i, xs, dw_i, db, dxs)
    return _lstm_tangents(unroll, w_h, _project(w_i, b, xs), h0, c0, dw_h, dzs, dh0, dc0, reset, dreset)


# ------------------------------------------------------------------------------------------------ GRU


def blocks(a: Array, num: int) -> tuple[Array, ...]:
    """The gate axis split into ``num`` separate arrays, so a loop step reads whole blocks (``Structure.gates``)."""
    return tuple(jnp.split(a, num, axis=-1))


def gru_scan(w_h: Array, b_hn: Array, zs: Array, h0: Array, unroll: int, keep: bool, reset: tuple | None = None):
    """The GRU (reset-after) forward loop; the same equations as ``recurrax.gru``'s transition (``reset``: ``None``
    or ``(mask (T, N), h_r (N, H))``, as the LSTM's)."""

    def body(h, inputs):
        (z_r, z_z, z_n), m = inputs
        if m is not None:
            h = where_valid(m, reset[1], h)
        h_r, h_z, h_n = jnp.split(h @ w_h, 3, axis=-1)
        r = jax.nn.sigmoid(z_r + h_r)
        u = jax.nn.sigmoid(z_z + h_z)
        h_n = h_n + b_hn
        n = jnp.tanh(z_n + r * h_n)
        h_new = (1.0 - u) * n + u * h
        return h_new, ((h_new, r, u, n, h_n) if keep else h_new)

    return jax.lax.scan(body, h0, _with_mask(blocks(zs, 3), reset), unroll=unroll)[1]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def gru_recurrence(w_h: Array, b_hn: Array, zs: Array, h0: Array, unroll: int = 1, reset: tuple | None = None) -> Array:
    """Runs the reset-after GRU recurrence over projected inputs.

    Args:
      w_h: ``(H, 3H)`` recurrent weights, gate order r, z, n.
      b_hn: ``(H,)`` the recurrent bias of the candidate, inside the reset gate.
      zs: ``(T, N, 3H)`` projected inputs ``x W_i + b``.
      h0: ``(N, H)`` initial state.
      unroll: steps per loop iteration.
      reset: ``None`` or ``(mask (T, N), h_r (N, H))``: where the state is restored before a step.

    Returns:
      ``hs: (T, N, H)``, the state after every step.
    """
    return gru_scan(w_h, b_hn, zs, h0, unroll, keep=False, reset=reset)


@functools.partial(gru_recurrence.defjvp, symbolic_zeros=True)
def _gru_jvp(unroll, primals, tangents):
    w_h, b_hn, zs, h0, reset = primals
    dw_h, db_hn, dzs, dh0, dreset = tangents
    hs, r, u, n, h_n = gru_scan(w_h, b_hn, zs, h0, unroll, keep=True, reset=reset)
    dzs = None if isinstance(dzs, SymbolicZero) else dzs
    da, dhn = gru_weight_tangents(h0, hs, dzs, dw_h, db_hn, reset=reset)
    dhs = gru_tangent_scan(
        w_h, (r, u, n, h_n), hs, h0, da, dhn, dense(dh0, h0), unroll, *reset_tangents(reset, dreset, read=1)
    )
    return hs, dhs


def gru_weight_tangents(
    h0: Array, hs: Array, dzs: Array | None, dw_h: Any, db_hn: Any, time_axis: int = 0, reset: tuple | None = None
):
    """``(da, dhn)`` for :func:`gru_tangent_scan` (``None`` where zero): ``da`` adds to the input side's
    tangent ``dzs`` that of ``h_{t-1} W_hr`` and ``h_{t-1} W_hz`` from the weights; ``dhn`` is the tangent of
    ``h_{t-1} W_hn + b_hn`` from the weights.

    The r and z blocks are a matmul with the whole ``dW_h``, its candidate block masked out: reverse mode
    transposes it into ``h^T @ dzs`` over all three blocks (a third of that matmul wasted), where slicing
    ``dzs`` would copy a ``(T, N, 2H)`` array instead.
    """
    da, dhn = dzs, None
    if not isinstance(dw_h, SymbolicZero):
        hidden, hs_prev = dw_h.shape[0], previous(h0, hs, time_axis, reset)
        keep_rz = jnp.concatenate([jnp.ones((2 * hidden,), dw_h.dtype), jnp.zeros((hidden,), dw_h.dtype)])
        da = _hoisted(da, hs_prev, dw_h * keep_rz, batch_major=time_axis == 1)
        dhn = seq_matmul(hs_prev, dw_h[:, 2 * hidden :], batch_major=time_axis == 1)
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
    reset: tuple[Array, Array] | None = None,
    dreset: tuple[Array] | None = None,
) -> Array:
    """The reset-after GRU's tangent recurrence: ``dhs: (T, N, H)``.

    Args:
      w_h: ``(H, 3H)``; acts: ``r, u, n, h_n`` (``h_n = h W_hn + b_hn``), as four ``(T, N, H)`` arrays or
        as ``(T, N, 3H)`` (``r, u, n``) and ``(T, N, H)`` (``h_n``); hs: ``(T, N, H)``; h0: ``(N, H)``.
      da: ``(T, N, 3H)`` the tangent of the pre-activations ``x W_i + b + h_{t-1} [W_hr, W_hz, 0]`` not flowing
        through the state, or ``None`` for zero.
      dhn: ``(T, N, H)`` the tangent of ``h_n`` not flowing through the state, or ``None``.
      dh0: ``(N, H)`` the initial state's tangent.
      reset: ``None`` or ``(mask (T, N), h_r (N, H))``; dreset: then ``(dh_r,)``, the restored state's tangent.
    """
    r, u, n, h_n = (*jnp.split(acts[0], 3, axis=-1), acts[1]) if len(acts) == 2 else acts
    hs_prev = previous(h0, hs, reset=reset)
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
        e = [c * d for c, d in zip((c_r, c_z, c_n), blocks(da, 3))]
    if dhn is not None:
        e[2] = e[2] + k_g[2] * dhn

    def body(dh, inputs):
        (e_t, k_t, u_t), m = inputs
        if m is not None:
            dh = where_valid(m, dreset[0], dh)
        g_r, g_z, g_n = jnp.split(dh @ w_h, 3, axis=-1)
        dh_new = sum(e_i + k_i * g_i for e_i, k_i, g_i in zip(e_t, k_t, (g_r, g_z, g_n))) + u_t * dh
        return dh_new, dh_new

    return jax.lax.scan(body, dh0, _with_mask((tuple(e), k_g, u), reset), unroll=unroll)[1]


# --------------------------------------------------------------------------------------------- backends


def gate_params(kind: str, params: Params) -> tuple[Array, ...]:
    """``(w_i, b, w_h)`` of the plain LSTM, ``(w_i, b, w_h, b_hn)`` of the GRU; absent biases are zeros."""
    w_i, w_h = params["w_i"], params["w_h"]
    b = params.get("b", jnp.zeros((w_i.shape[-1],), w_i.dtype))
    if kind == "lstm":
        return w_i, b, w_h
    return w_i, b, w_h, params.get("b_hn", jnp.zeros((w_h.shape[0],), w_h.dtype))


def gated_run(kind: str, sequence):
    """A backend's ``run`` for the plain LSTM or GRU, from ``sequence(weights, xs, state, req, reset, lengths)``.

    ``sequence`` sees :func:`gate_params`, ``xs: (T, N, I)``, the state's leaves ``(N, H)``, the resets
    (``None`` or ``(mask (T, N), *restored leaves (N, H))``) and the lengths (``None`` or ``(N,)``), the batch dims
    flattened into ``N`` (the leading one first, so a sharded batch axis stays sharded), and returns the state's
    leaves after every step, each ``(T, N, H)``. Past a row's length they may be anything finite (a sequence may
    run through the padding or skip it): :func:`~recurrax.backends.base.from_states` keeps only the valid steps.
    """
    make = LSTMState if kind == "lstm" else RNNState

    def run(
        cell: Cell, params: Params, xs: Array, state: State, lengths: Array | None, resets: Resets | None, req: Request
    ):
        steps, batch = xs.shape[0], xs.shape[1:-1]
        rows = math.prod(batch)

        def go(weights, xs, leaves, reset, lengths):
            return sequence(weights, xs.reshape(steps, rows, xs.shape[-1]), leaves, req, reset, lengths)

        flat = lambda st: tuple(leaf.reshape(rows, leaf.shape[-1]) for leaf in st)  # noqa: E731
        reset = None if resets is None else (resets.mask.reshape(steps, rows), *flat(resets.state))
        rows_lengths = None if lengths is None else jnp.broadcast_to(lengths, batch).reshape(rows)
        out = checkpointed(go, req.remat)(gate_params(kind, params), xs, flat(state), reset, rows_lengths)
        states = make(*(a.reshape(steps, *batch, a.shape[-1]) for a in out))
        return from_states(cell, states, state, lengths, req)

    return run


def _lstm(weights, xs, state, req: Request, reset, lengths):
    del lengths  # runs through the padding (see gated_run)
    w_i, b, w_h = weights
    unroll = tuning.sequence_unroll(req.unroll, req.num_steps, req.platform)
    return lstm_sequence(w_i, b, w_h, xs, *state, unroll, tuning.PROJECTION_CHUNK.get(req.platform), reset)


def _gru(weights, xs, state, req: Request, reset, lengths):
    del lengths  # runs through the padding (see gated_run)
    w_i, b, w_h, b_hn = weights
    unroll = tuning.sequence_unroll(req.unroll, req.num_steps, req.platform)
    return (gru_recurrence(w_h, b_hn, _project(w_i, b, xs), state[0], unroll, reset),)


LSTM = Backend(
    name="xla_lstm",
    supports=lambda req: first_reason(needs_kind(req, "lstm", "xla_lstm"), needs_one_dtype(req, "xla_lstm")),
    prefers=lambda req: True,
    run=gated_run("lstm", _lstm),
    description="the plain LSTM as one XLA loop with a sequence-level derivative; any platform and dtype",
)

GRU = Backend(
    name="xla_gru",
    supports=lambda req: first_reason(needs_kind(req, "gru", "xla_gru"), needs_one_dtype(req, "xla_gru")),
    prefers=lambda req: False,  # measured no faster than `sequential` (RESULTS step 9): only when named
    run=gated_run("gru", _gru),
    description="the plain reset-after GRU as one XLA loop with a sequence-level derivative (only when named)",
)
