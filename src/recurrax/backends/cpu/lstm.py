"""The native CPU LSTM recurrence as JAX primitives, with every transform JAX needs.

Three primitives, all batch-major and batch-flattened (``xs: (N, T, I)``, states ``(N, H)``):

- ``forward``: ``(xs, w_i, b, w_h, h0, c0, zs, resets, h_r, c_r, lengths) -> (hs, cs, acts)``, the whole sequence
  in one custom call (``acts``, the activated gates ``(N, T, 4H)``, only when kept for differentiation). ``resets:
  (N, T)`` bool with the restored state ``h_r, c_r: (N, H)``, or all three ``(N, 0)`` for none (:func:`no_resets`).
  ``lengths: (N, 1)`` int32, or ``(N, 0)`` for none (:func:`no_lengths`): row ``n`` runs its first ``lengths[n]``
  steps, and every result past them is zero (no work is done there).
- ``tangent``: the linear tangent recurrence of :func:`recurrax.backends.xla.lstm_tangent_scan`. It runs as
  that XLA scan (so ``jax.jvp``/``jacfwd`` work), and its transpose, which reverse mode uses, is
- ``backward``: one custom call that runs the reverse recurrence and returns the gate gradients
  ``(N, T, 4H)`` and the initial state's cotangents; the weight gradients are large matmuls after it.

Batching and the applicability check are shared with the GRU (:mod:`recurrax.backends.cpu._primitives`);
higher-order derivatives go through the same equations written in JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive

from recurrax.backends.cpu._primitives import (
    define_recurrence,
    f32,
    lengths_operand,
    no_resets,
    past_lengths,
    projected,
    rowwise,
    swap,
)
from recurrax.backends.xla import lstm_scan, lstm_tangent_scan
from recurrax.core import Array

__all__ = ["backward", "forward", "no_resets", "tangent"]


def _forward_shapes(xs, w_i, b, w_h, h0, c0, zs, resets, h_r, c_r, lengths, *, keep_acts: bool):
    rows, steps, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
    return f32(rows, steps, hidden), f32(rows, steps, hidden), f32(rows, steps, 4 * hidden if keep_acts else 0)


def _backward_shapes(w_h, acts, cs, c0, resets, c_r, *rest):
    rows, steps, hidden = cs.shape
    restored = c_r.shape[-1]
    return f32(rows, steps, 4 * hidden), f32(rows, hidden), f32(rows, hidden), f32(rows, restored), f32(rows, restored)


def _tangent_shapes(w_h, acts, cs, *rest, unroll: int):
    return f32(*cs.shape), f32(*cs.shape)


_FORWARD_KINDS = ("swwwnnssnnn", "sss")
_BACKWARD_KINDS = ("wssnsnnss", "snnnn")
_forward_call = rowwise("recurrax_lstm_forward", _forward_shapes, _FORWARD_KINDS)
# The gate gradients take the gates' buffer: it is their last use, and a fresh (N, T, 4H) buffer costs
# page faults on every call (benchmarks/RESULTS.md, step 11).
_backward_call = rowwise("recurrax_lstm_backward", _backward_shapes, _BACKWARD_KINDS, input_output_aliases={1: 0})


def _tangent_scan(w_h, acts, cs, c0, resets, c_r, lengths, dpre, dh0, dc0, dh_r, dc_r, *, unroll: int):
    acts, cs, dpre = swap(acts, cs, dpre)
    has = resets.shape[-1] > 0
    reset, dreset = ((resets.T, c_r), (dh_r, dc_r)) if has else (None, None)
    # Past a row's length the tangents feed only later steps of that row, all zeroed here.
    return past_lengths(lengths, *swap(*lstm_tangent_scan(w_h, acts, cs, c0, dpre, dh0, dc0, unroll, reset, dreset)))


def _forward_reference(xs, w_i, b, w_h, h0, c0, zs, resets, h_r, c_r, lengths, *, keep_acts: bool):
    reset = (resets.T, h_r, c_r) if resets.shape[-1] else None
    hs, cs, acts = swap(*lstm_scan(w_h, *swap(projected(xs, w_i, b, zs)), h0, c0, 1, keep=True, reset=reset))
    return past_lengths(lengths, hs, cs, acts if keep_acts else acts[..., :0])


def _backward_reference(w_h, acts, cs, c0, resets, c_r, lengths, ct_hs, ct_cs):
    """The transpose of the tangent scan, in JAX: what ``backward`` computes, differentiable."""
    linear = functools.partial(_tangent_scan, w_h, acts, cs, c0, resets, c_r, lengths, unroll=1)
    like = (jnp.zeros((*acts.shape[:2], 4 * cs.shape[-1]), cs.dtype), c0, c0, c_r, c_r)
    cts = tuple(jnp.zeros_like(cs) if ct.shape[-1] == 0 else ct for ct in (ct_hs, ct_cs))
    return jax.linear_transpose(linear, *like)(cts)


@functools.cache
def _primitives() -> dict[str, Primitive]:
    """Creates and registers the primitives on first use (registering is process-wide)."""
    return define_recurrence(
        "lstm",
        forward=(_forward_call, _forward_shapes, _FORWARD_KINDS),
        backward=(_backward_call, _backward_shapes, _BACKWARD_KINDS),
        tangent=(_tangent_scan, _tangent_shapes, ("wssnsnnsnnnn", "ss")),
        forward_reference=_forward_reference,
        backward_reference=_backward_reference,
        residuals=7,
    )


def forward(
    xs: Array,
    w_i: Array,
    b: Array,
    w_h: Array,
    h0: Array,
    c0: Array,
    zs: Array | None = None,
    reset: tuple[Array, Array, Array] | None = None,
    lengths: Array | None = None,
    keep_acts: bool = False,
):
    """``(hs, cs, acts)``: the LSTM over ``xs: (N, T, I)`` from ``(h0, c0): (N, H)``; gate order i, f, g, o.

    The gate pre-activations are ``b + zs + xs @ w_i + h @ w_h``, where ``zs: (N, T, 4H)`` is an input
    projection computed by the caller (``None``: none; ``xs`` may then have ``I = 0``). ``reset``: ``None`` or
    ``(resets (N, T) bool, h_r, c_r (N, H))``, the state restored before the steps it marks. ``lengths``: ``None``
    or ``(N,)`` int, the steps each row runs; its results past them are zero.
    ``hs, cs: (N, T, H)``; ``acts: (N, T, 4H)`` the activated gates if ``keep_acts``, else ``(N, T, 0)``.
    """
    zs = xs[..., :0] if zs is None else zs
    reset = no_resets(h0, 2) if reset is None else reset
    lengths = lengths_operand(lengths, h0, xs.shape[1])
    return tuple(_primitives()["forward"].bind(xs, w_i, b, w_h, h0, c0, zs, *reset, lengths, keep_acts=keep_acts))


def tangent(w_h, acts, cs, c0, resets, c_r, lengths, dpre, dh0, dc0, dh_r, dc_r, unroll: int = 1):
    """``(dhs, dcs)``: :func:`recurrax.backends.xla.lstm_tangent_scan`, zero past ``lengths``, whose transpose is the
    native backward pass (``resets``, ``c_r``, ``dh_r``, ``dc_r`` as :func:`no_resets` and ``lengths`` as
    :func:`no_lengths` for none)."""
    args = (w_h, acts, cs, c0, resets, c_r, lengths, dpre, dh0, dc0, dh_r, dc_r)
    return tuple(_primitives()["tangent"].bind(*args, unroll=unroll))


def backward(w_h, acts, cs, c0, resets, c_r, lengths, ct_hs, ct_cs) -> tuple[Array, ...]:
    """``(dpre: (N, T, 4H), dh0, dc0, dh_r, dc_r: (N, H))``: the transpose of :func:`tangent` applied to
    ``(ct_hs, ct_cs)``; ``dh_r, dc_r`` are ``(N, 0)`` without resets.

    A cotangent of shape ``(N, T, 0)`` stands for zero.
    """
    return tuple(_primitives()["backward"].bind(w_h, acts, cs, c0, resets, c_r, lengths, ct_hs, ct_cs))
