"""``native_lstm`` and ``native_gru``: the plain LSTM and reset-after GRU in the native CPU kernels, float32.

Each sequence runs in one custom call forward and one backward (:mod:`recurrax.backends.cpu.lstm`,
:mod:`recurrax.backends.cpu.gru`); the weight gradients are large XLA matmuls after the backward call, and
forward mode runs the tangent recurrence of :mod:`recurrax.backends.xla` as an XLA scan. Any hidden size: units
are zero-padded to whole vectors inside the call (:func:`pad_units`). ``auto`` runs them from
:data:`recurrax.backends.tuning.NATIVE_FROM` steps times batch on.

With ``lengths`` the kernels skip the padding, as PyTorch's packed sequences do but without repacking the arrays:
they take the rows longest first, so at each step the rows still running fill the first tiles, and the rest cost
only their zeros (forward and backward; RESULTS step 22). Only the weight gradients, XLA matmuls over every row
and step, still pay for the padding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from recurrax.backends import tuning
from recurrax.backends.base import (
    Backend,
    Request,
    first_reason,
    needs_kind,
    needs_one_dtype,
    needs_platform,
)
from recurrax.backends.cpu import gru as native_gru
from recurrax.backends.cpu import lstm as native_lstm
from recurrax.backends.cpu._primitives import HIDDEN_MULTIPLE, lengths_operand, no_resets, swap
from recurrax.backends.cpu.build import load
from recurrax.backends.xla import (
    dense,
    gate_tangent,
    gated_run,
    gru_weight_tangents,
    projection_tangent,
    seq_matmul,
)
from recurrax.core import Array

__all__ = ["GRU", "LSTM", "gru_sequence", "lstm_sequence", "pad_units"]


def _operands(xs: Array, w_i: Array) -> tuple[Array, Array, Array | None]:
    """``(xs, w_i, zs)`` for a forward kernel from batch-major ``xs: (N, T, I)``: folded into its steps from
    :data:`~recurrax.backends.tuning.NATIVE_FOLD_ROWS` rows on, else projected by XLA first (``zs``) with empty
    ``xs`` and ``w_i``."""
    if xs.shape[0] >= tuning.NATIVE_FOLD_ROWS:
        return xs, w_i, None
    return xs[..., :0], w_i[:0], seq_matmul(xs, w_i, batch_major=True)


def _kernel_resets(reset: tuple | None, like: Array, fields: int) -> tuple[Array, ...]:
    """The kernels' resets operands from ``reset = (mask (T, N), *restored (N, H))``: the mask batch-major;
    :func:`~recurrax.backends.cpu._primitives.no_resets` for ``None``."""
    if reset is None:
        return no_resets(like, fields)
    return (reset[0].T, *reset[1:])


def _restored_tangents(reset: tuple | None, dreset: tuple | None, like: Array, fields: int) -> tuple[Array, ...]:
    """The restored state's tangents for a tangent primitive (``(N, 0)`` without resets)."""
    if reset is None:
        return no_resets(like, fields)[1:]
    return tuple(dense(d, r) for d, r in zip(dreset[1:], reset[1:]))


def _check_operands(
    fn: str, gates: int, xs: Array, h0: Array, reset: tuple | None, lengths: Array | None, **named: Array
) -> None:
    """Raises unless the operands agree with ``xs: (T, N, I)`` and ``h0: (N, H)``: the kernels read their buffers
    by these sizes, so a mismatch would read past them instead of failing."""
    if jnp.ndim(xs) != 3 or jnp.ndim(h0) != 2:
        raise ValueError(f"{fn}: `xs` must be (T, N, I) and `h0` (N, H), got {jnp.shape(xs)} and {jnp.shape(h0)}.")
    (num_steps, rows, inputs), hidden = jnp.shape(xs), jnp.shape(h0)[1]
    if hidden % HIDDEN_MULTIPLE or jnp.shape(h0)[0] != rows:
        raise ValueError(
            f"{fn}: `h0` must be (N={rows}, H) with H a multiple of {HIDDEN_MULTIPLE}, got {jnp.shape(h0)}."
        )
    want = {"w_i": (inputs, gates * hidden), "b": (gates * hidden,), "w_h": (hidden, gates * hidden)}
    want |= {"c0": (rows, hidden), "b_hn": (hidden,)}
    if reset is not None:
        named = {**named, "reset[0]": reset[0], **{f"reset[{i}]": r for i, r in enumerate(reset[1:], 1)}}
        want |= {"reset[0]": (num_steps, rows)} | {f"reset[{i}]": (rows, hidden) for i in range(1, len(reset))}
    if lengths is not None:
        if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
            raise TypeError(f"{fn}: `lengths` must be integers, got {jnp.result_type(lengths)}.")
        named, want = {**named, "lengths": lengths}, want | {"lengths": (rows,)}
    for arg, value in {"xs": xs, "h0": h0, **named}.items():
        if arg in want and tuple(jnp.shape(value)) != want[arg]:
            raise ValueError(f"{fn}: `{arg}` must have shape {want[arg]}, got {tuple(jnp.shape(value))}.")
        dtype = jnp.result_type(value)
        if arg not in ("reset[0]", "lengths") and dtype != jnp.float32:
            raise TypeError(f"{fn}: `{arg}` must be float32 (the kernels' only dtype), got {dtype}.")


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def lstm_sequence(
    w_i: Array,
    b: Array,
    w_h: Array,
    xs: Array,
    h0: Array,
    c0: Array,
    unroll: int = 1,
    reset: tuple | None = None,
    lengths: Array | None = None,
):
    """The plain LSTM over ``xs: (T, N, I)`` in the native kernel: ``(hs, cs)``, each ``(T, N, H)``.

    Args:
      w_i: ``(I, 4H)``; b: ``(4H,)``; w_h: ``(H, 4H)`` (gate order i, f, g, o), ``H`` a multiple of
        :data:`~recurrax.backends.cpu._primitives.HIDDEN_MULTIPLE`; h0, c0: ``(N, H)``.
      unroll: steps per loop iteration of the forward-mode tangent scan.
      reset: ``None`` or ``(mask (T, N), h_r, c_r (N, H))``: the state restored before the steps it marks.
      lengths: ``None`` or ``(N,)`` int: row ``n`` runs its first ``lengths[n]`` steps (clamped to ``[0, T]``) and
        is zero after them, where the kernels skip its work. The kernels never read the padded inputs, but the
        gradient of ``w_i`` is a matmul over every step, so padding must be finite for it to be
        (:func:`recurrax.scan` zeroes it).

    Reverse mode runs the native backward pass; forward mode, :func:`recurrax.backends.xla.lstm_tangent_scan`.
    """
    _check_operands("native.lstm_sequence", 4, xs, h0, reset, lengths, w_i=w_i, b=b, w_h=w_h, c0=c0)
    xs, w_i, zs = _operands(*swap(xs), w_i)
    return swap(*native_lstm.forward(xs, w_i, b, w_h, h0, c0, zs, _kernel_resets(reset, h0, 2), lengths)[:2])


@functools.partial(lstm_sequence.defjvp, symbolic_zeros=True)
def _lstm_sequence_jvp(unroll, primals, tangents):
    w_i, b, w_h, xs, h0, c0, reset, lengths = primals
    dw_i, db, dw_h, dxs, dh0, dc0, dreset, _ = tangents
    xs, dxs = swap(xs, dxs)
    xs_k, w_i_k, zs = _operands(xs, w_i)
    resets, h_r, c_r = _kernel_resets(reset, h0, 2)
    hs, cs, acts = native_lstm.forward(xs_k, w_i_k, b, w_h, h0, c0, zs, (resets, h_r, c_r), lengths, keep_acts=True)
    dzs = projection_tangent(w_i, xs, dw_i, db, dxs, batch_major=True)
    dpre = gate_tangent(dzs, h0, hs, dw_h, acts, time_axis=1, reset=None if reset is None else (resets, h_r))
    linear = (dpre, dense(dh0, h0), dense(dc0, c0), *_restored_tangents(reset, dreset, h0, 2))
    lens = lengths_operand(lengths, h0, xs.shape[1])
    dhs, dcs = native_lstm.tangent(w_h, acts, cs, c0, resets, c_r, lens, *linear, unroll)
    return swap(hs, cs), swap(dhs, dcs)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def gru_sequence(
    w_i: Array,
    b: Array,
    w_h: Array,
    b_hn: Array,
    xs: Array,
    h0: Array,
    unroll: int = 1,
    reset: tuple | None = None,
    lengths: Array | None = None,
) -> Array:
    """The reset-after GRU over ``xs: (T, N, I)`` in the native kernel: ``hs: (T, N, H)``.

    Args:
      w_i: ``(I, 3H)``; b: ``(3H,)``; w_h: ``(H, 3H)``; b_hn: ``(H,)`` (gate order r, z, n); h0: ``(N, H)``.
      unroll: steps per loop iteration of the forward-mode tangent scan.
      reset: ``None`` or ``(mask (T, N), h_r (N, H))``: the state restored before the steps it marks.
      lengths: ``None`` or ``(N,)`` int, as :func:`lstm_sequence`'s.

    Reverse mode runs the native backward pass; forward mode, :func:`recurrax.backends.xla.gru_tangent_scan`.
    """
    _check_operands("native.gru_sequence", 3, xs, h0, reset, lengths, w_i=w_i, b=b, w_h=w_h, b_hn=b_hn)
    xs, w_i, zs = _operands(*swap(xs), w_i)
    return swap(native_gru.forward(xs, w_i, b, w_h, b_hn, h0, zs, _kernel_resets(reset, h0, 1), lengths)[0])[0]


@functools.partial(gru_sequence.defjvp, symbolic_zeros=True)
def _gru_sequence_jvp(unroll, primals, tangents):
    w_i, b, w_h, b_hn, xs, h0, reset, lengths = primals
    dw_i, db, dw_h, db_hn, dxs, dh0, dreset, _ = tangents
    xs, dxs = swap(xs, dxs)
    xs_k, w_i_k, zs = _operands(xs, w_i)
    resets, h_r = _kernel_resets(reset, h0, 1)
    hs, acts, hn = native_gru.forward(xs_k, w_i_k, b, w_h, b_hn, h0, zs, (resets, h_r), lengths, keep_acts=True)
    dzs = projection_tangent(w_i, xs, dw_i, db, dxs, batch_major=True)
    prev_reset = None if reset is None else (resets, h_r)
    da, dhn = gru_weight_tangents(h0, hs, dzs, dw_h, db_hn, time_axis=1, reset=prev_reset)
    da, dhn = (jnp.zeros_like(a) if d is None else d for a, d in ((acts, da), (hn, dhn)))
    linear = (da, dhn, dense(dh0, h0), *_restored_tangents(reset, dreset, h0, 1))
    lens = lengths_operand(lengths, h0, xs.shape[1])
    dhs = native_gru.tangent(w_h, acts, hn, hs, h0, resets, h_r, lens, *linear, unroll)
    return swap(hs)[0], swap(dhs)[0]


def pad_units(a: Array, blocks: int, *, hidden: int, padded: int, axis: int = -1) -> Array:
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


def _padded(weights: tuple[Array, ...], leaves: tuple[Array, ...], reset: tuple | None, gates: int):
    """The weights, state leaves and restored leaves with every block of ``H`` units padded to a multiple of
    ``HIDDEN_MULTIPLE``."""
    hidden = weights[2].shape[0]
    padded = -(-hidden // HIDDEN_MULTIPLE) * HIDDEN_MULTIPLE
    pad = functools.partial(pad_units, hidden=hidden, padded=padded)
    w_i, b, w_h, *b_hn = weights
    weights = (pad(w_i, gates), pad(b, gates), pad(pad(w_h, gates), 1, axis=0), *(pad(x, 1) for x in b_hn))
    if reset is not None:
        reset = (reset[0], *(pad(leaf, 1) for leaf in reset[1:]))
    return weights, tuple(pad(leaf, 1) for leaf in leaves), reset, hidden


def _lstm(weights, xs, state, req: Request, reset, lengths):
    (w_i, b, w_h), (h0, c0), reset, hidden = _padded(weights, state, reset, 4)
    unroll = tuning.sequence_unroll(req.unroll, req.num_steps, req.platform)
    return tuple(a[..., :hidden] for a in lstm_sequence(w_i, b, w_h, xs, h0, c0, unroll, reset, lengths))


def _gru(weights, xs, state, req: Request, reset, lengths):
    (w_i, b, w_h, b_hn), (h0,), reset, hidden = _padded(weights, state, reset, 3)
    unroll = tuning.sequence_unroll(req.unroll, req.num_steps, req.platform)
    return (gru_sequence(w_i, b, w_h, b_hn, xs, h0, unroll, reset, lengths)[..., :hidden],)


def _supports(kind: str, name: str):
    def supports(req: Request) -> str | None:
        return first_reason(
            needs_kind(req, kind, name),
            needs_platform(req, "cpu", name),
            needs_one_dtype(req, name, ("float32",)),
            None if load() is not None else f"{name!r}: the native kernels could not be built here (see the warning)",
        )

    return supports


def _prefers(req: Request) -> bool:
    return req.rows >= tuning.NATIVE_FROM


LSTM = Backend(
    name="native_lstm",
    supports=_supports("lstm", "native_lstm"),
    prefers=_prefers,
    run=gated_run("lstm", _lstm),
    description="the plain LSTM in the native CPU kernels (float32, one custom call forward and one backward)",
)

GRU = Backend(
    name="native_gru",
    supports=_supports("gru", "native_gru"),
    prefers=_prefers,
    run=gated_run("gru", _gru),
    description="the plain reset-after GRU in the native CPU kernels (float32)",
)
