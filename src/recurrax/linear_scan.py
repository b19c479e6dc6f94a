"""Backends for diagonal linear recurrences ``s_t = a_t * s_{t-1} + b_t``, sequential or parallel in time.

A cell that declares its ``transition`` a linear recurrence (:class:`recurrax.core.LinearRecurrence`)
can run in :func:`recurrax.scan` with any of these backends; all compute the same states:

* ``"sequential"``: one step after another (``lax.scan``), ``T`` dependent steps.
* ``"associative"``: ``lax.associative_scan`` over the whole sequence with the operator
  ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``: ``O(log T)`` depth, about twice the work.
* ``"chunked"``: associative within chunks of ``chunk_size`` steps, then one sequential pass over the
  ``T / chunk_size`` chunk boundaries that carries the state from chunk to chunk.
* ``"auto"``: the backend (and chunk size) that measured fastest on this kind of device; see :func:`choose`.

In log space (``log_space=True``, minGRU/minLSTM) the coefficients are ``(log a, log b)`` with ``b > 0``
and the operator is ``(la1 + la2, logaddexp(la2 + lb1, lb2))``, the pairwise form of the
``logcumsumexp`` scan of Feng et al. (2024): no product of ``a`` is ever formed outside the logarithm,
so nothing underflows however long the sequence. The initial state enters once, linearly,
``s_t = A_t s_0 + B_t`` with ``(A_t, B_t)`` the composed coefficients, so it may have any sign.

Derivatives: the tangent of the recurrence is again one, ``ds_t = a_t ds_{t-1} + (da_t s_{t-1} + db_t)``
(in linear space, whatever the forward's space), and the parallel backends compute it with the same
scan (a ``custom_jvp``); reverse mode is its transpose, a reverse-time scan. Forward and reverse
mode both work, and nothing differentiates through the partial products of the associative operator.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, State

BACKENDS = ("auto", "sequential", "associative", "chunked")
PARALLEL = ("associative", "chunked")

# Chosen from `python -m benchmarks.linear --chunks 32` and an earlier sweep over chunks of 16, 64, 256 and
# 1024 steps (minGRU, B=8, H=256, T in 512, 4096, 16384; tables in benchmarks/results/linear_cpu.md).
# On a 2-core CPU, stepping was fastest or within noise of the fastest in 5 of the 6 (T, fwd/fwd+bwd)
# cells, and fastest for training (fwd+bwd) at every T: each step is a few thousand multiply-adds, and
# the parallel scans make several extra passes over (T, B, H) arrays. Among chunk sizes, 16 was fastest.
# Per platform, ordered (max_steps, backend, chunk_size) rules; the first with T <= max_steps wins.
_AUTO: dict[str, tuple[tuple[float, str, int], ...]] = {
    "cpu": ((float("inf"), "sequential", 0),),
    # Not measured (no accelerator was lent); one associative scan is the usual choice on GPUs and TPUs.
    "gpu": ((float("inf"), "associative", 0),),
    "tpu": ((float("inf"), "associative", 0),),
}
DEFAULT_CHUNK = 16


def choose(num_steps: int, platform: str | None = None) -> tuple[str, int]:
    """The backend ``"auto"`` runs for ``num_steps`` steps on ``platform`` (default: JAX's default backend).

    Returns ``(backend, chunk_size)``; ``chunk_size`` only matters for ``"chunked"``.
    """
    platform = platform or jax.default_backend()
    for max_steps, backend, chunk in _AUTO.get(platform, _AUTO["gpu"]):
        if num_steps <= max_steps:
            return backend, chunk
    return "associative", 0


def linear_scan(
    a: Array,
    b: Array,
    s0: Array,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    log_space: bool = False,
) -> Array:
    """Every state of ``s_t = a_t * s_{t-1} + b_t`` (time-major), starting from ``s_{-1} = s0``.

    Args:
      a: ``(T, *batch, S)`` coefficients (``log a`` with ``log_space``); real or complex.
      b: ``(T, *batch, S)`` inputs (``log b``, real, with ``log_space``).
      s0: ``(*batch, S)`` initial state.
      backend: one of ``"auto"``, ``"sequential"``, ``"associative"``, ``"chunked"`` (module docstring).
      chunk_size: steps per chunk for ``"chunked"`` (default: the measured choice, else 16).
      log_space: whether ``a`` and ``b`` are logarithms.

    Returns:
      ``s: (T, *batch, S)``, ``s[t]`` the state after step ``t``, in the dtype of ``s0`` and the coefficients.
    """
    a, b, s0 = jnp.asarray(a), jnp.asarray(b), jnp.asarray(s0)
    if a.shape != b.shape or a.ndim < 1 or s0.shape != a.shape[1:]:
        raise ValueError(
            f"linear_scan: `a` and `b` must have one shape (T, *batch, S) and `s0` shape (*batch, S), "
            f"got a {tuple(a.shape)}, b {tuple(b.shape)}, s0 {tuple(s0.shape)}."
        )
    if backend not in BACKENDS:
        raise ValueError(f"linear_scan: `backend` must be one of {BACKENDS}, got {backend!r}.")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"linear_scan: `chunk_size` must be a positive int, got {chunk_size!r}.")
    if backend == "auto":
        backend, auto_chunk = choose(a.shape[0])
        chunk_size = chunk_size or auto_chunk
    if backend == "sequential":
        return _sequential(a, b, s0, log_space)
    return _parallel(a, b, s0, backend, chunk_size or DEFAULT_CHUNK, log_space)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _parallel(a: Array, b: Array, s0: Array, backend: str, chunk: int, log_space: bool) -> Array:
    """The associative or chunked scan, with its derivative written as another linear scan (see below)."""
    combine = compose_log if log_space else compose
    if backend == "associative":
        return apply_affine(jax.lax.associative_scan(combine, (a, b), axis=0), s0, log_space)
    return _chunked(combine, a, b, s0, chunk, log_space)


@_parallel.defjvp
def _parallel_jvp(backend, chunk, log_space, primals, tangents):
    # The tangent of s_t = a_t s_{t-1} + b_t is the linear recurrence ds_t = a_t ds_{t-1} + (da_t s_{t-1} + db_t),
    # run by the same backend. Differentiating through the associative operator instead would also
    # differentiate every partial product of a (slower, and slow to compile); this form is linear in the
    # tangents, so JAX transposes it into the reverse-time scan of the backward pass.
    a, b, s0 = primals
    da, db, ds0 = tangents
    s = _parallel(a, b, s0, backend, chunk, log_space)
    s_prev = jnp.concatenate([s0[None].astype(s.dtype), s[:-1]])
    if log_space:
        a = jnp.exp(a)
        rhs = a * s_prev * da + jnp.exp(b) * db
    else:
        rhs = da * s_prev + db
    return s, _parallel(a, rhs, ds0.astype(rhs.dtype), backend, chunk, False)


def resolve(cell: Cell, backend: str, num_steps: int) -> str:
    """The backend :func:`recurrax.scan` runs ``cell`` with: ``"sequential"`` or one of :data:`PARALLEL`.

    Raises unless ``backend`` is known and, for a parallel one, the cell declares a linear recurrence.
    """
    if backend not in BACKENDS:
        raise ValueError(f"scan[{cell.name}]: `backend` must be one of {BACKENDS}, got {backend!r}.")
    if cell.linear is None:
        if backend in PARALLEL:
            raise ValueError(
                f"scan[{cell.name}]: backend {backend!r} needs a cell that declares a linear recurrence "
                f"(Cell.linear); {cell.name!r} does not, so its backends are 'sequential' and 'auto'."
            )
        return "sequential"
    return choose(num_steps)[0] if backend == "auto" else backend


def states(
    cell: Cell,
    params: Params,
    zs: Array,
    state: State,
    backend: str,
    *,
    lengths: Array | None = None,
    remat: bool = False,
    chunk_size: int | None = None,
) -> State:
    """Every state of ``cell`` over the projected inputs ``zs: (T, *batch, G)``, in parallel over time.

    With ``lengths: (*batch,)`` a sequence's state stops changing after its last valid step, as in
    the sequential driver; ``chunk_size`` overrides the measured one of ``"chunked"``. Returns the
    states as a pytree with leaves ``(T, *batch, ...)``.
    """
    lin = cell.linear
    chunk = chunk_size or (choose(zs.shape[0])[1] if backend == "chunked" else None) or None

    def run(params, zs, state):
        a, b = lin.coefficients(params, zs)
        s0 = lin.carry(state)
        s = linear_scan(
            a, b, s0.astype(jnp.result_type(s0, a)), backend=backend, chunk_size=chunk, log_space=lin.log_space
        )
        return lin.state(params, s.astype(s0.dtype), zs)

    out = (jax.checkpoint(run) if remat else run)(params, zs, state)
    return out if lengths is None else _freeze_after(out, lengths, state)


def _freeze_after(states: State, lengths: Array, initial: State) -> State:
    """Replaces the states past each sequence's last valid step with the one at that step (or the initial one)."""
    steps = jax.tree.leaves(states)[0].shape[0]
    valid = jnp.arange(steps).reshape((steps,) + (1,) * lengths.ndim) < lengths  # (T, *batch)
    last = jnp.maximum(lengths - 1, 0)[None]

    def leaf(s: Array, s0: Array) -> Array:
        feat = (1,) * (s.ndim - valid.ndim)
        at_last = jnp.take_along_axis(s, jnp.broadcast_to(last.reshape(last.shape + feat), (1, *s.shape[1:])), axis=0)
        at_last = jnp.where((lengths > 0).reshape(lengths.shape + feat), at_last[0], s0)
        return jnp.where(valid.reshape(valid.shape + feat), s, at_last[None])

    return jax.tree.map(leaf, states, initial)


def compose(first: tuple[Array, Array], second: tuple[Array, Array]) -> tuple[Array, Array]:
    """Composes two affine maps ``s -> a s + b``: first, then second."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def compose_log(first: tuple[Array, Array], second: tuple[Array, Array]) -> tuple[Array, Array]:
    """:func:`compose` on ``(log a, log b)``."""
    la1, lb1 = first
    la2, lb2 = second
    return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)


def apply_affine(coeffs: tuple[Array, Array], s: Array, log_space: bool) -> Array:
    """``A s + B`` for composed coefficients ``(A, B)`` (logarithms with ``log_space``)."""
    a, b = coeffs
    return jnp.exp(a) * s + jnp.exp(b) if log_space else a * s + b


def _sequential(a: Array, b: Array, s0: Array, log_space: bool) -> Array:
    def body(s, ab):
        s = apply_affine(ab, s, log_space)
        return s, s

    return jax.lax.scan(body, s0, (a, b))[1]


def _chunked(combine: Any, a: Array, b: Array, s0: Array, chunk: int, log_space: bool) -> Array:
    """Associative scans within chunks of ``chunk`` steps; a sequential pass carries the state across chunks."""
    steps = a.shape[0]
    chunk = min(chunk, steps)
    num = -(-steps // chunk)
    pad = num * chunk - steps
    if pad:
        # Identity steps (a = 1, b = 0) at the end leave the states before them unchanged.
        ones, zeros = (0.0, -jnp.inf) if log_space else (1.0, 0.0)
        a = jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), ones, a.dtype)])
        b = jnp.concatenate([b, jnp.full((pad, *b.shape[1:]), zeros, b.dtype)])
    a = a.reshape(num, chunk, *a.shape[1:])
    b = b.reshape(num, chunk, *b.shape[1:])
    a, b = jax.lax.associative_scan(combine, (a, b), axis=1)  # within each chunk, from its start

    def carry(s, ab):
        return apply_affine(ab, s, log_space), s

    _, starts = jax.lax.scan(carry, s0, (a[:, -1], b[:, -1]))  # the state entering each chunk
    s = apply_affine((a, b), starts[:, None], log_space)
    return s.reshape(num * chunk, *s.shape[2:])[:steps]
