"""The native CPU GRU recurrence (reset-after, cuDNN's form) as JAX primitives.

As :mod:`recurrax.backends.cpu.lstm`, batch-major and batch-flattened:

- ``forward``: ``(xs, w_i, b, w_h, b_hn, h0, zs, resets, h_r, lengths) -> (hs, acts, hn)``, ``acts: (N, T, 3H)``
  holding ``r, u, n`` and ``hn: (N, T, H)`` holding ``h_n = h W_hn + b_hn`` when kept for differentiation;
  ``resets``, ``h_r`` and ``lengths`` as the LSTM's.
- ``tangent``: :func:`recurrax.backends.xla.gru_tangent_scan`, linear in ``(da, dhn, dh0)``: the tangents of the
  gates' pre-activations outside ``r * h_n`` and of ``h_n`` (both without the part flowing through the
  state), and of the initial state.
- ``backward``: its transpose in one custom call, ``(dzs, dhn, dh0)`` with ``dzs = [da_r, da_z, da_n]``,
  written into the buffers of ``acts`` and ``hn``: their last use, so the call needs no fresh
  ``(N, T, 3H)`` memory (``benchmarks/RESULTS.md``, step 15).
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
from recurrax.backends.xla import gru_scan, gru_tangent_scan
from recurrax.core import Array

__all__ = ["backward", "forward", "tangent"]


def _forward_shapes(xs, w_i, b, w_h, b_hn, h0, zs, resets, h_r, lengths, *, keep_acts: bool):
    rows, steps, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
    kept = hidden if keep_acts else 0
    return f32(rows, steps, hidden), f32(rows, steps, 3 * kept), f32(rows, steps, kept)


def _backward_shapes(w_h, acts, hn, hs, h0, resets, h_r, *rest):
    rows, steps, hidden = hs.shape
    return f32(rows, steps, 3 * hidden), f32(rows, steps, hidden), f32(rows, hidden), f32(rows, h_r.shape[-1])


def _tangent_shapes(w_h, acts, hn, hs, *rest, unroll: int):
    return (f32(*hs.shape),)


_FORWARD_KINDS = ("swwwwnssnn", "sss")
_BACKWARD_KINDS = ("wsssnsnns", "ssnn")
_forward_call = rowwise("recurrax_gru_forward", _forward_shapes, _FORWARD_KINDS)
# The gate gradients take the buffers of the activations they are computed from (see the module).
_backward_call = rowwise("recurrax_gru_backward", _backward_shapes, _BACKWARD_KINDS, input_output_aliases={1: 0, 2: 1})


def _tangent_scan(w_h, acts, hn, hs, h0, resets, h_r, lengths, da, dhn, dh0, dh_r, *, unroll: int):
    acts, hn, hs, da, dhn = swap(acts, hn, hs, da, dhn)
    reset, dreset = ((resets.T, h_r), (dh_r,)) if resets.shape[-1] else (None, None)
    # Past a row's length the tangents feed only later steps of that row, all zeroed here.
    return past_lengths(lengths, *swap(gru_tangent_scan(w_h, (acts, hn), hs, h0, da, dhn, dh0, unroll, reset, dreset)))


def _forward_reference(xs, w_i, b, w_h, b_hn, h0, zs, resets, h_r, lengths, *, keep_acts: bool):
    reset = (resets.T, h_r) if resets.shape[-1] else None
    hs, r, u, n, h_n = swap(*gru_scan(w_h, b_hn, *swap(projected(xs, w_i, b, zs)), h0, 1, keep=True, reset=reset))
    acts = jnp.concatenate([r, u, n], axis=-1)
    out = (hs, acts, h_n) if keep_acts else (hs, acts[..., :0], h_n[..., :0])
    return past_lengths(lengths, *out)


def _backward_reference(w_h, acts, hn, hs, h0, resets, h_r, lengths, ct_hs):
    """The transpose of the tangent scan, in JAX: what ``backward`` computes, differentiable."""
    linear = functools.partial(_tangent_scan, w_h, acts, hn, hs, h0, resets, h_r, lengths, unroll=1)
    ct = jnp.zeros_like(hs) if ct_hs.shape[-1] == 0 else ct_hs
    return jax.linear_transpose(linear, acts, hn, h0, h_r)((ct,))


@functools.cache
def _primitives() -> dict[str, Primitive]:
    """Creates and registers the primitives on first use (registering is process-wide)."""
    return define_recurrence(
        "gru",
        forward=(_forward_call, _forward_shapes, _FORWARD_KINDS),
        backward=(_backward_call, _backward_shapes, _BACKWARD_KINDS),
        tangent=(_tangent_scan, _tangent_shapes, ("wsssnsnnssnn", "s")),
        forward_reference=_forward_reference,
        backward_reference=_backward_reference,
        residuals=8,
    )


def forward(
    xs: Array,
    w_i: Array,
    b: Array,
    w_h: Array,
    b_hn: Array,
    h0: Array,
    zs: Array | None = None,
    reset: tuple[Array, Array] | None = None,
    lengths: Array | None = None,
    keep_acts: bool = False,
):
    """``(hs, acts, hn)``: the GRU over ``xs: (N, T, I)`` from ``h0: (N, H)``; gate order r, z, n.

    The input side of the gates is ``b + zs + xs @ w_i``, ``zs: (N, T, 3H)`` an input projection computed
    by the caller (``None``: none; ``xs`` may then have ``I = 0``).
    ``hs: (N, T, H)``; if ``keep_acts``, ``acts: (N, T, 3H)`` (``r, u, n``) and ``hn: (N, T, H)``
    (``h_n``), else both ``(N, T, 0)``. ``reset``: ``None`` or ``(resets (N, T) bool, h_r (N, H))``; ``lengths``:
    ``None`` or ``(N,)`` int, the steps each row runs (its results past them are zero).
    """
    zs = xs[..., :0] if zs is None else zs
    reset = no_resets(h0, 1) if reset is None else reset
    lengths = lengths_operand(lengths, h0, xs.shape[1])
    return tuple(_primitives()["forward"].bind(xs, w_i, b, w_h, b_hn, h0, zs, *reset, lengths, keep_acts=keep_acts))


def tangent(w_h, acts, hn, hs, h0, resets, h_r, lengths, da, dhn, dh0, dh_r, unroll: int = 1) -> Array:
    """:func:`recurrax.backends.xla.gru_tangent_scan`, zero past ``lengths``, whose transpose is the native backward
    pass (``resets``, ``h_r``, ``dh_r`` as :func:`~recurrax.backends.cpu.lstm.no_resets` and ``lengths`` as
    :func:`~recurrax.backends.cpu._primitives.no_lengths` for none)."""
    args = (w_h, acts, hn, hs, h0, resets, h_r, lengths, da, dhn, dh0, dh_r)
    return _primitives()["tangent"].bind(*args, unroll=unroll)[0]


def backward(w_h, acts, hn, hs, h0, resets, h_r, lengths, ct_hs) -> tuple[Array, ...]:
    """``(dzs: (N, T, 3H), dhn: (N, T, H), dh0: (N, H), dh_r)``: the transpose of :func:`tangent` at ``ct_hs``
    (``(N, T, 0)``: zero); ``dh_r`` is ``(N, 0)`` without resets."""
    return tuple(_primitives()["backward"].bind(w_h, acts, hn, hs, h0, resets, h_r, lengths, ct_hs))
