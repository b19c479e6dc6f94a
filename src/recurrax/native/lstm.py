"""The native CPU LSTM recurrence as JAX primitives, with every transform JAX needs.

Three primitives, all time-major and batch-flattened (``xs: (T, N, I)``, states ``(N, H)``):

- ``forward``: ``(xs, w_i, b, w_h, h0, c0) -> (hs, cs, acts)``, the whole sequence in one custom call
  (``acts``, the activated gates ``(T, N, 4H)``, only when kept for differentiation).
- ``tangent``: the linear tangent recurrence of :func:`recurrax.fused.lstm_tangent_scan`. It runs as
  that XLA scan (so ``jax.jvp``/``jacfwd`` work), and its transpose, which reverse mode uses, is
- ``backward``: one custom call that runs the reverse recurrence and returns the gate gradients
  ``(T, N, 4H)`` and the initial state's cotangents; the weight gradients are large matmuls after it.

``vmap`` folds a batch axis into ``N`` (one call, not one per example) unless the weights are
batched, in which case it maps the call over the batch. Higher-order derivatives go through the same
equations written in JAX. The primitives apply to float32 on CPU with ``H`` a multiple of
:data:`HIDDEN_MULTIPLE`; :func:`applies` says whether they do.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from recurrax.core import Array
from recurrax.native.build import load

__all__ = ["HIDDEN_MULTIPLE", "applies", "backward", "forward", "tangent"]

HIDDEN_MULTIPLE = 16
"""The kernel tiles hidden units by whole vectors (16 floats with AVX-512, 8 without)."""


def applies(*arrays: Array) -> bool:
    """Whether the native kernel can run an LSTM with these arrays (``w_h`` first): float32 on CPU,
    ``H`` a multiple of :data:`HIDDEN_MULTIPLE`, and the kernel built on this machine."""
    hidden = arrays[0].shape[0]
    return (
        jax.default_backend() == "cpu"
        and all(jnp.result_type(a) == jnp.float32 for a in arrays)
        and hidden % HIDDEN_MULTIPLE == 0
        and load() is not None
    )


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


# ------------------------------------------------------------------------------- the calls themselves


def _forward_shapes(xs, w_i, b, w_h, h0, c0, *, keep_acts: bool):
    steps, rows, hidden = xs.shape[0], xs.shape[1], h0.shape[-1]
    return _f32(steps, rows, hidden), _f32(steps, rows, hidden), _f32(steps, rows, 4 * hidden if keep_acts else 0)


def _backward_shapes(w_h, acts, cs, *rest):
    steps, rows, hidden = cs.shape
    return _f32(steps, rows, 4 * hidden), _f32(rows, hidden), _f32(rows, hidden)


def _tangent_shapes(w_h, acts, cs, *rest, unroll: int):
    return _f32(*cs.shape), _f32(*cs.shape)


def _forward_call(*args, keep_acts: bool):
    shapes = _forward_shapes(*args, keep_acts=keep_acts)
    return jax.ffi.ffi_call("recurrax_lstm_forward", shapes)(*args, keep_acts=keep_acts)


def _backward_call(*args):
    # The gate gradients take the gates' buffer: it is their last use, and a fresh (T, N, 4H) buffer costs
    # page faults on every call (benchmarks/RESULTS.md, step 11).
    return jax.ffi.ffi_call("recurrax_lstm_backward", _backward_shapes(*args), input_output_aliases={1: 0})(*args)


def _tangent_scan(w_h, acts, cs, c0, dpre, dh0, dc0, *, unroll: int):
    from recurrax.fused import lstm_tangent_scan  # fused imports this module

    return lstm_tangent_scan(w_h, acts, cs, c0, dpre, dh0, dc0, unroll)


def _backward_reference(w_h, acts, cs, c0, ct_hs, ct_cs):
    """The transpose of the tangent scan, in JAX: what ``backward`` computes, differentiable."""
    rows, hidden = c0.shape
    linear = functools.partial(_tangent_scan, w_h, acts, cs, c0, unroll=1)
    like = (jnp.zeros((cs.shape[0], rows, 4 * hidden), cs.dtype), c0, c0)
    cts = tuple(jnp.zeros_like(cs) if ct.shape[-1] == 0 else ct for ct in (ct_hs, ct_cs))
    return jax.linear_transpose(linear, *like)(cts)


def _forward_reference(xs, w_i, b, w_h, h0, c0, *, keep_acts: bool):
    from recurrax.fused import _lstm_scan

    hs, cs, acts = _lstm_scan(w_h, xs @ w_i + b, h0, c0, 1, keep=True)
    return hs, cs, acts if keep_acts else acts[..., :0]


# --------------------------------------------------------------------------------------------- batching

# Per operand / result: "w" a weight (never folded), "s" a sequence (T, N, ...), "n" a state (N, ...).
_KINDS = {
    "forward": ("swwwnn", "sss"),
    "backward": ("wssnss", "snn"),
    "tangent": ("wssnsnn", "ss"),
}


def _batch_rule(name: str):
    in_kinds, out_kinds = _KINDS[name]

    def rule(args: Sequence[Array], dims: Sequence[int | None], **params):
        prim = _primitives()[name]
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        if any(d is not None for k, d in zip(in_kinds, dims) if k == "w"):
            # Batched weights: one call per batch element.
            lead = [
                jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))
                for a, d in zip(args, dims)
            ]
            return jax.lax.map(lambda a: tuple(prim.bind(*a, **params)), lead), [0] * len(out_kinds)
        folded = []
        for a, d, kind in zip(args, dims, in_kinds):
            if kind == "w":
                folded.append(a)
                continue
            axis = 1 if kind == "s" else 0  # the N axis
            a = (
                jnp.moveaxis(a, d, axis)
                if d is not None
                else jnp.broadcast_to(jnp.expand_dims(a, axis), (*a.shape[:axis], size, *a.shape[axis:]))
            )
            folded.append(a.reshape(*a.shape[:axis], -1, *a.shape[axis + 2 :]))
        outs = prim.bind(*folded, **params)
        unfolded = []
        for out, kind in zip(outs, out_kinds):
            axis = 1 if kind == "s" else 0
            unfolded.append(out.reshape(*out.shape[:axis], size, -1, *out.shape[axis + 1 :]))
        return unfolded, [1 if kind == "s" else 0 for kind in out_kinds]

    return rule


# ------------------------------------------------------------------------------------------------ rules


def _is_zero(t) -> bool:
    return type(t) is ad.Zero


def _tangent_jvp(primals, tangents, *, unroll: int):
    prims = _primitives()
    out = prims["tangent"].bind(*primals, unroll=unroll)
    dense = [ad.instantiate_zeros(t) for t in tangents]
    if all(_is_zero(t) for t in tangents[:4]):  # the map is linear in the rest
        return out, prims["tangent"].bind(*primals[:4], *dense[4:], unroll=unroll)
    return out, jax.jvp(functools.partial(_tangent_scan, unroll=unroll), tuple(primals), tuple(dense))[1]


def _tangent_transpose(cts, w_h, acts, cs, c0, dpre, dh0, dc0, *, unroll: int):
    del unroll
    if any(ad.is_undefined_primal(r) for r in (w_h, acts, cs, c0)):
        raise NotImplementedError("recurrax: the LSTM tangent recurrence is linear only in its tangent operands")
    # A zero cotangent goes in as an empty sequence rather than a materialised one.
    ct_hs, ct_cs = (cs[..., :0] if _is_zero(ct) else ct for ct in cts)
    grads = _primitives()["backward"].bind(w_h, acts, cs, c0, ct_hs, ct_cs)
    return [None] * 4 + [g if ad.is_undefined_primal(x) else None for g, x in zip(grads, (dpre, dh0, dc0))]


def _reference_jvp(name: str, reference):
    def rule(primals, tangents, **params):
        out = _primitives()[name].bind(*primals, **params)
        dense = [ad.instantiate_zeros(t) for t in tangents]
        return out, jax.jvp(functools.partial(reference, **params), tuple(primals), tuple(dense))[1]

    return rule


@functools.cache
def _primitives() -> dict[str, Primitive]:
    """Creates and registers the primitives on first use (registering is process-wide)."""
    if load() is None:
        raise RuntimeError("recurrax.native: the LSTM kernel could not be built on this machine (see the warning)")
    prims = {}
    for name, call, shapes in (
        ("forward", _forward_call, _forward_shapes),
        ("backward", _backward_call, _backward_shapes),
        ("tangent", _tangent_scan, _tangent_shapes),
    ):
        prim = Primitive(f"recurrax_lstm_{name}")
        prim.multiple_results = True
        prim.def_impl(call)
        prim.def_abstract_eval(
            lambda *args, _shapes=shapes, **params: [ShapedArray(s.shape, s.dtype) for s in _shapes(*args, **params)]
        )
        mlir.register_lowering(prim, mlir.lower_fun(call, multiple_results=True))
        batching.primitive_batchers[prim] = _batch_rule(name)
        prims[name] = prim
    ad.primitive_jvps[prims["tangent"]] = _tangent_jvp
    ad.primitive_transposes[prims["tangent"]] = _tangent_transpose
    ad.primitive_jvps[prims["forward"]] = _reference_jvp("forward", _forward_reference)
    ad.primitive_jvps[prims["backward"]] = _reference_jvp("backward", _backward_reference)
    return prims


def forward(xs: Array, w_i: Array, b: Array, w_h: Array, h0: Array, c0: Array, keep_acts: bool = False):
    """``(hs, cs, acts)``: the LSTM over ``xs: (T, N, I)`` from ``(h0, c0): (N, H)``; gate order i, f, g, o.

    ``hs, cs: (T, N, H)``; ``acts: (T, N, 4H)`` the activated gates if ``keep_acts``, else ``(T, N, 0)``.
    """
    return tuple(_primitives()["forward"].bind(xs, w_i, b, w_h, h0, c0, keep_acts=keep_acts))


def tangent(w_h, acts, cs, c0, dpre, dh0, dc0, unroll: int = 1) -> tuple[Array, Array]:
    """:func:`recurrax.fused.lstm_tangent_scan`, whose transpose is the native backward pass."""
    return tuple(_primitives()["tangent"].bind(w_h, acts, cs, c0, dpre, dh0, dc0, unroll=unroll))


def backward(w_h, acts, cs, c0, ct_hs, ct_cs) -> tuple[Array, Array, Array]:
    """``(dpre: (T, N, 4H), dh0, dc0: (N, H))``: the transpose of :func:`tangent` applied to ``(ct_hs, ct_cs)``.

    A cotangent of shape ``(T, N, 0)`` stands for zero.
    """
    return tuple(_primitives()["backward"].bind(w_h, acts, cs, c0, ct_hs, ct_cs))
