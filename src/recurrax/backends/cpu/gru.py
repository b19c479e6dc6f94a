"""The native CPU GRU recurrence (reset-after, cuDNN's form) as JAX primitives.

As :mod:`recurrax.backends.cpu.lstm`, batch-major and batch-flattened:

- ``forward``: ``(xs, w_i, b, w_h, b_hn, h0) -> (hs, acts, hn)``, ``acts: (N, T, 3H)`` holding ``r, u, n``
  and ``hn: (N, T, H)`` holding ``h_n = h W_hn + b_hn`` when kept for differentiation.
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

from recurrax.backends.cpu._primitives import define_recurrence, f32, projected, rowwise, swap
from recurrax.backends.xla import gru_scan, gru_tangent_scan
from recurrax.core import Array

__all__ = ["backward", "forward", "tangent"]


def _forward_shapes(xs, w_i, b, w_h, b_hn, h0, zs, *, keep_acts: bool):
    rows, steps, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
    kept = hidden if keep_acts else 0
    return f32(rows, steps, hidden), f32(rows, steps, 3 * kept), f32(rows, steps, kept)


def _backward_shapes(w_h, acts, hn, hs, *rest):
    rows, steps, hidden = hs.shape
    return f32(rows, steps, 3 * hidden), f32(rows, steps, hidden), f32(rows, hidden)


def _tangent_shapes(w_h, acts, hn, hs, *rest, unroll: int):
    return (f32(*hs.shape),)


_FORWARD_KINDS = ("swwwwns", "sss")
_BACKWARD_KINDS = ("wsssns", "ssn")
_forward_call = rowwise("recurrax_gru_forward", _forward_shapes, _FORWARD_KINDS)
# The gate gradients take the buffers of the activations they are computed from (see the module).
_backward_call = rowwise("recurrax_gru_backward", _backward_shapes, _BACKWARD_KINDS, input_output_aliases={1: 0, 2: 1})


def _tangent_scan(w_h, acts, hn, hs, h0, da, dhn, dh0, *, unroll: int):
    acts, hn, hs, da, dhn = swap(acts, hn, hs, da, dhn)
    return swap(gru_tangent_scan(w_h, (acts, hn), hs, h0, da, dhn, dh0, unroll))


def _forward_reference(xs, w_i, b, w_h, b_hn, h0, zs, *, keep_acts: bool):
    hs, r, u, n, h_n = swap(*gru_scan(w_h, b_hn, *swap(projected(xs, w_i, b, zs)), h0, 1, keep=True))
    acts = jnp.concatenate([r, u, n], axis=-1)
    return (hs, acts, h_n) if keep_acts else (hs, acts[..., :0], h_n[..., :0])


def _backward_reference(w_h, acts, hn, hs, h0, ct_hs):
    """The transpose of the tangent scan, in JAX: what ``backward`` computes, differentiable."""
    linear = functools.partial(_tangent_scan, w_h, acts, hn, hs, h0, unroll=1)
    ct = jnp.zeros_like(hs) if ct_hs.shape[-1] == 0 else ct_hs
    return jax.linear_transpose(linear, acts, hn, h0)((ct,))


@functools.cache
def _primitives() -> dict[str, Primitive]:
    """Creates and registers the primitives on first use (registering is process-wide)."""
    return define_recurrence(
        "gru",
        forward=(_forward_call, _forward_shapes, _FORWARD_KINDS),
        backward=(_backward_call, _backward_shapes, _BACKWARD_KINDS),
        tangent=(_tangent_scan, _tangent_shapes, ("wsssnssn", "s")),
        forward_reference=_forward_reference,
        backward_reference=_backward_reference,
        residuals=5,
    )


def forward(
    xs: Array,
    w_i: Array,
    b: Array,
    w_h: Array,
    b_hn: Array,
    h0: Array,
    zs: Array | None = None,
    keep_acts: bool = False,
):
    """``(hs, acts, hn)``: the GRU over ``xs: (N, T, I)`` from ``h0: (N, H)``; gate order r, z, n.

    The input side of the gates is ``b + zs + xs @ w_i``, ``zs: (N, T, 3H)`` an input projection computed
    by the caller (``None``: none; ``xs`` may then have ``I = 0``).
    ``hs: (N, T, H)``; if ``keep_acts``, ``acts: (N, T, 3H)`` (``r, u, n``) and ``hn: (N, T, H)``
    (``h_n``), else both ``(N, T, 0)``.
    """
    zs = xs[..., :0] if zs is None else zs
    return tuple(_primitives()["forward"].bind(xs, w_i, b, w_h, b_hn, h0, zs, keep_acts=keep_acts))


def tangent(w_h, acts, hn, hs, h0, da, dhn, dh0, unroll: int = 1) -> Array:
    """:func:`recurrax.backends.xla.gru_tangent_scan`, whose transpose is the native backward pass."""
    return _primitives()["tangent"].bind(w_h, acts, hn, hs, h0, da, dhn, dh0, unroll=unroll)[0]


def backward(w_h, acts, hn, hs, h0, ct_hs) -> tuple[Array, Array, Array]:
    """``(dzs: (N, T, 3H), dhn: (N, T, H), dh0: (N, H))``: the transpose of :func:`tangent` at ``ct_hs``
    (``(N, T, 0)``: zero)."""
    return tuple(_primitives()["backward"].bind(w_h, acts, hn, hs, h0, ct_hs))
