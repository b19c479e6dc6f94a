"""What the native recurrences share: primitives over XLA FFI calls and their batching.

Operands and results are batch-major and batch-flattened: sequences ``(N, T, ...)``, states ``(N, ...)``,
the layout of the callers' arrays, so no transposes surround the calls. Each primitive declares per
operand and per result a kind: ``"w"`` a weight (never batched into the call), ``"s"`` a sequence,
``"n"`` a state. ``vmap`` folds a batch axis into ``N`` (one call, not one per example) unless a weight is
batched, in which case it maps the call over the batch.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.custom_derivatives import SymbolicZero
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from recurrax.backends.cpu.build import load
from recurrax.core import Array

HIDDEN_MULTIPLE = 16
"""The kernels tile hidden units by whole vectors (16 floats with AVX-512, 8 without)."""


def f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def swap(*seqs: Any) -> tuple[Any, ...]:
    """Sequences ``(N, T, ...)`` as ``(T, N, ...)`` and back (symbolic zeros pass through): the kernels are
    batch-major, the JAX references and :mod:`recurrax.backends.xla` time-major. Between a caller's batch-major
    array and a kernel, XLA cancels the two transposes."""
    return tuple(s if isinstance(s, SymbolicZero) else jnp.swapaxes(s, 0, 1) for s in seqs)


def is_zero(t) -> bool:
    return type(t) is ad.Zero


def rowwise(target: str, shapes: Callable, kinds: tuple[str, str], **options) -> Callable:
    """The FFI ``target`` as a call that XLA's SPMD partitioner splits along the rows ``N``.

    A custom call is opaque to the partitioner, which would otherwise gather every operand onto every device and
    run the whole batch on each. The rows are independent, so each device runs its own: sequences and states
    keep the row sharding of the first such operand that has one (the others follow it), weights are replicated.
    ``options`` go to ``jax.ffi.ffi_call`` (e.g. ``input_output_aliases``).
    """
    in_kinds, out_kinds = kinds

    def spec(kind: str, ndim: int, rows) -> PartitionSpec:
        return PartitionSpec() if kind == "w" else PartitionSpec(rows, *([None] * (ndim - 1)))

    def row_axes(arg_shapes) -> Any:
        for kind, arg in zip(in_kinds, arg_shapes):
            sharding = getattr(arg, "sharding", None)
            if kind != "w" and isinstance(sharding, NamedSharding) and len(sharding.spec) and sharding.spec[0]:
                return sharding.spec[0]
        return None

    def rule(ranks: tuple[int, ...]) -> str:
        """Shardy's rule: one factor ``n`` for the row axis of every sequence and state; each other axis its own."""
        names = (f"f{k}" for k in itertools.count())
        out_ranks = [3 if k == "s" else 2 for k in out_kinds]
        side = lambda kinds, ranks: ", ".join(  # noqa: E731
            " ".join(([] if k == "w" else ["n"]) + [next(names) for _ in range(r - (k != "w"))])
            for k, r in zip(kinds, ranks)
        )
        return f"{side(in_kinds, ranks)} -> {side(out_kinds, out_ranks)}"

    @functools.cache
    def partitioned(static: tuple, ranks: tuple[int, ...]) -> Callable:
        params = dict(static)

        def call(*args):
            return tuple(jax.ffi.ffi_call(target, shapes(*args, **params), **options)(*args, **params))

        wrapped = custom_partitioning(call)

        def partition(mesh, arg_shapes, result_shape):
            rows = row_axes(arg_shapes)
            args = tuple(NamedSharding(mesh, spec(k, len(a.shape), rows)) for k, a in zip(in_kinds, arg_shapes))
            results = tuple(NamedSharding(mesh, spec(k, len(r.shape), rows)) for k, r in zip(out_kinds, result_shape))
            return mesh, call, results, args

        def infer(mesh, arg_shapes, result_shape):
            rows = row_axes(arg_shapes)
            return tuple(NamedSharding(mesh, spec(k, len(r.shape), rows)) for k, r in zip(out_kinds, result_shape))

        wrapped.def_partition(partition=partition, infer_sharding_from_operands=infer, sharding_rule=rule(ranks))
        return wrapped

    def run(*args, **params):
        return partitioned(tuple(sorted(params.items())), tuple(a.ndim for a in args))(*args)

    run.partitioned = True
    return run


def define(name: str, call: Callable, shapes: Callable, kinds: tuple[str, str]) -> Primitive:
    """A primitive evaluated (eagerly and lowered) by ``call``, of result shapes ``shapes(*args, **params)``."""
    if load() is None:
        raise RuntimeError("recurrax.backends.cpu: the kernels could not be built on this machine (see the warning)")
    prim = Primitive(f"recurrax_{name}")
    prim.multiple_results = True
    prim.def_impl(call)
    prim.def_abstract_eval(lambda *args, **params: [ShapedArray(s.shape, s.dtype) for s in shapes(*args, **params)])
    mlir.register_lowering(prim, mlir.lower_fun(call, multiple_results=True))
    batching.primitive_batchers[prim] = _batch_rule(prim, *kinds)
    if getattr(call, "partitioned", False):
        # Its lowering holds a custom_partitioning call, which needs the devices when lowered; JAX looks for
        # such primitives in the jaxpr only (a private registry, as jax's own callbacks use it).
        from jax._src import dispatch

        dispatch.prim_requires_devices_during_lowering.add(prim)
    return prim


def define_recurrence(
    cell: str,
    *,
    forward: tuple[Callable, Callable, tuple[str, str]],
    backward: tuple[Callable, Callable, tuple[str, str]],
    tangent: tuple[Callable, Callable, tuple[str, str]],
    forward_reference: Callable,
    backward_reference: Callable,
    residuals: int = 4,
) -> dict[str, Primitive]:
    """A cell's ``forward``, ``backward`` and ``tangent`` primitives (each ``(call, shapes, kinds)``) and their rules.

    ``tangent`` is linear in its operands after the first ``residuals`` and transposes into ``backward``;
    forward mode through ``forward`` and ``backward`` runs their JAX references.
    """
    prims = {
        name: define(f"{cell}_{name}", *spec)
        for name, spec in (("forward", forward), ("backward", backward), ("tangent", tangent))
    }
    ad.primitive_jvps[prims["tangent"]] = jvp_rule(prims["tangent"], tangent[0], linear_from=residuals)
    ad.primitive_transposes[prims["tangent"]] = linear_transpose_rule(residuals, prims["backward"].bind)
    ad.primitive_jvps[prims["forward"]] = jvp_rule(prims["forward"], forward_reference)
    ad.primitive_jvps[prims["backward"]] = jvp_rule(prims["backward"], backward_reference)
    return prims


def no_resets(like: Array, fields: int) -> tuple[Array, ...]:
    """The resets operands of a call without resets: ``resets`` and ``fields`` restored leaves, all ``(N, 0)``."""
    rows = like.shape[0]
    return (jnp.zeros((rows, 0), jnp.bool_), *(jnp.zeros((rows, 0), like.dtype) for _ in range(fields)))


def no_lengths(like: Array) -> Array:
    """The lengths operand of a call in which every row runs all its steps: ``(N, 0)`` int32."""
    return jnp.zeros((like.shape[0], 0), jnp.int32)


def lengths_operand(lengths: Array | None, like: Array, steps: int) -> Array:
    """The kernels' lengths operand from ``lengths: (N,)`` (``None``: :func:`no_lengths`), clamped to ``[0, steps]``
    before the cast to int32, so wide integers cannot wrap."""
    if lengths is None:
        return no_lengths(like)
    return jnp.clip(lengths, 0, steps).astype(jnp.int32).reshape(-1, 1)


def past_lengths(lengths: Array, *seqs: Array) -> tuple[Array, ...]:
    """``seqs (N, T, ...)`` with zeros past each row's length (``lengths: (N, 1)``; ``(N, 0)`` for none), as the
    kernels write them."""
    if lengths.shape[-1] == 0:
        return seqs
    valid = jnp.arange(seqs[0].shape[1]) < lengths  # (N, T)
    return tuple(jnp.where(valid.reshape(*valid.shape, *(1,) * (s.ndim - 2)), s, 0) for s in seqs)


def projected(xs: Array, w_i: Array, b: Array, zs: Array) -> Array:
    """``b + zs + xs @ w_i``, the forward kernels' input side (``zs: (N, T, 0)`` for none), in JAX."""
    z = xs @ w_i + b
    return z + zs if zs.shape[-1] else z


def jvp_rule(prim: Primitive, reference: Callable, linear_from: int | None = None) -> Callable:
    """A jvp rule: the primitive for the primal, forward mode through ``reference`` (the same map in JAX).

    With ``linear_from``, a map linear in its operands from that index on: where the operands before it
    have no tangent, the tangent is the primitive itself applied to the tangents.
    """

    def rule(primals, tangents, **params):
        out = prim.bind(*primals, **params)
        dense = tuple(ad.instantiate_zeros(t) for t in tangents)
        if linear_from is not None and all(is_zero(t) for t in tangents[:linear_from]):
            return out, prim.bind(*primals[:linear_from], *dense[linear_from:], **params)
        return out, jax.jvp(functools.partial(reference, **params), tuple(primals), dense)[1]

    return rule


def linear_transpose_rule(residuals: int, backward: Callable) -> Callable:
    """The transpose rule of a map linear in its operands after the first ``residuals``.

    ``backward(*residual_values, *cotangents)`` returns one cotangent per linear operand; a zero
    cotangent reaches it as an ``(N, T, 0)`` sequence (the kernels read that as zero).
    """

    def rule(cts, *args, **params):
        del params
        res, lin = args[:residuals], args[residuals:]
        if any(ad.is_undefined_primal(r) for r in res):
            raise NotImplementedError(
                "recurrax.backends.cpu: a tangent recurrence is linear only in its tangent operands"
            )
        empty = next(r for r in res if getattr(r, "ndim", 0) == 3)[..., :0]  # (N, T, 0)
        cts = tuple(empty if is_zero(ct) else ct for ct in cts)
        grads = backward(*res, *cts)
        return [None] * residuals + [g if ad.is_undefined_primal(x) else None for g, x in zip(grads, lin)]

    return rule


def _batch_rule(prim: Primitive, in_kinds: str, out_kinds: str):
    def rule(args: Sequence[Array], dims: Sequence[int | None], **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        if any(d is not None for k, d in zip(in_kinds, dims) if k == "w"):
            lead = [_lead(a, d, size) for a, d in zip(args, dims)]
            return jax.lax.map(lambda a: tuple(prim.bind(*a, **params)), lead), [0] * len(out_kinds)
        folded = [a if kind == "w" else _fold(a, d, size) for a, d, kind in zip(args, dims, in_kinds)]
        outs = prim.bind(*folded, **params)
        return [_unfold(out, size) for out in outs], [0] * len(out_kinds)

    return rule


def _lead(a: Array, d: int | None, size: int) -> Array:
    return jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))


def _fold(a: Array, d: int | None, size: int) -> Array:
    """The batch axis ``d`` (or a broadcast one) merged into the leading row axis ``N``."""
    a = jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
    return a.reshape(size * a.shape[1], *a.shape[2:])


def _unfold(out: Array, size: int) -> Array:
    # Explicit sizes, not -1: the gates a forward pass does not keep are an empty (N, T, 0) result.
    return out.reshape(size, out.shape[0] // size, *out.shape[1:])
