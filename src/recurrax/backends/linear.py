"""``associative`` and ``chunked``: diagonal linear recurrences ``s_t = a_t * s_{t-1} + b_t`` in parallel over time.

A cell that declares its ``transition`` a linear recurrence (``Structure("linear", recurrence=...)``, see
:class:`recurrax.core.LinearRecurrence`) can run in :func:`recurrax.scan` on these backends as well as on
``sequential``; all compute the same states. :func:`linear_scan` runs the recurrence itself on arrays
(public as :mod:`recurrax.linear_scan`):

* ``"sequential"``: one step after another (``lax.scan``), ``T`` dependent steps.
* ``"associative"``: ``lax.associative_scan`` over the whole sequence with the operator
  ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``: ``O(log T)`` depth, about twice the work.
* ``"chunked"``: associative within chunks of ``chunk_size`` steps, then one sequential pass over the
  ``T / chunk_size`` chunk boundaries that carries the state from chunk to chunk.
* ``"auto"``: the backend (and chunk size) that measured fastest on this kind of device
  (:func:`recurrax.backends.tuning.linear_choice`).

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

from recurrax.backends import tuning
from recurrax.backends.base import Backend, Request, Resets, checkpointed, first_reason, from_states, needs_kind
from recurrax.core import Array, Cell, Params, State, structure_of

BACKENDS = ("auto", "sequential", "associative", "chunked")
"""The choices of :func:`linear_scan`'s ``backend``."""
PARALLEL = ("associative", "chunked")


def choose(num_steps: int, platform: str | None = None) -> tuple[str, int]:
    """``(backend, chunk_size)`` that ``"auto"`` runs for ``num_steps`` steps on ``platform`` (default: JAX's)."""
    return tuning.linear_choice(num_steps, platform or jax.default_backend())


def linear_scan(
    a: Array,
    b: Array,
    s0: Array,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    log_space: bool = False,
    cuts: Array | None = None,
) -> Array:
    """Every state of ``s_t = a_t * s_{t-1} + b_t`` (time-major), starting from ``s_{-1} = s0``.

    Args:
      a: ``(T, *batch, S)`` coefficients (``log a`` with ``log_space``); real or complex.
      b: ``(T, *batch, S)`` inputs (``log b``, real, with ``log_space``).
      s0: ``(*batch, S)`` initial state.
      backend: one of ``"auto"``, ``"sequential"``, ``"associative"``, ``"chunked"`` (module docstring).
      chunk_size: steps per chunk for ``"chunked"`` (default: the measured choice, else
        :data:`recurrax.backends.tuning.DEFAULT_CHUNK`).
      log_space: whether ``a`` and ``b`` are logarithms.
      cuts: boolean ``(T, *batch)``: where ``True`` the state before is dropped, ``s_t = b_t`` (``exp(b_t)``),
        so nothing of it reaches ``s_t``, not even a NaN or an infinity (``0 * s_{t-1}`` would pass those on).

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
    if cuts is None:
        cuts = jnp.zeros(a.shape[:-1], bool)
    cuts = jnp.asarray(cuts)
    if cuts.dtype != jnp.bool_ or cuts.shape != a.shape[:-1]:
        raise ValueError(
            f"linear_scan: `cuts` must be a boolean array of shape (T, *batch) = {tuple(a.shape[:-1])}, got "
            f"{cuts.dtype} {tuple(cuts.shape)}."
        )
    cuts = cuts[..., None]
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"linear_scan: `chunk_size` must be a positive int, got {chunk_size!r}.")
    if backend == "auto":
        backend, auto_chunk = choose(a.shape[0])
        chunk_size = chunk_size or auto_chunk
    if backend == "sequential":
        return _sequential(a, b, s0, cuts, log_space)
    return _parallel(a, b, s0, cuts, backend, chunk_size or tuning.DEFAULT_CHUNK, log_space)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _parallel(a: Array, b: Array, s0: Array, cuts: Array, backend: str, chunk: int, log_space: bool) -> Array:
    """The associative or chunked scan, with its derivative written as another linear scan (see below)."""
    combine = segmented(compose_log if log_space else compose)
    if backend == "associative":
        return apply_affine(jax.lax.associative_scan(combine, (a, b, cuts), axis=0), s0, log_space)
    return _chunked(combine, a, b, s0, cuts, chunk, log_space)


@_parallel.defjvp
def _parallel_jvp(backend, chunk, log_space, primals, tangents):
    # The tangent of s_t = a_t s_{t-1} + b_t is the linear recurrence ds_t = a_t ds_{t-1} + (da_t s_{t-1} + db_t),
    # run by the same backend. Differentiating through the associative operator instead would also
    # differentiate every partial product of a (slower, and slow to compile); this form is linear in the
    # tangents, so JAX transposes it into the reverse-time scan of the backward pass. At a cut s_t = b_t, so
    # ds_t = db_t, selected rather than multiplied (s_{t-1} may be a NaN the cut keeps out).
    a, b, s0, cuts = primals
    da, db, ds0, _ = tangents
    s = _parallel(a, b, s0, cuts, backend, chunk, log_space)
    s_prev = jnp.concatenate([s0[None].astype(s.dtype), s[:-1]])
    if log_space:
        a = jnp.exp(a)
        rhs = jnp.where(cuts, 0, a * s_prev * da) + jnp.exp(b) * db
    else:
        rhs = jnp.where(cuts, 0, da * s_prev) + db
    return s, _parallel(a, rhs, ds0.astype(rhs.dtype), cuts, backend, chunk, False)


def states(
    cell: Cell,
    params: Params,
    zs: Array,
    state: State,
    backend: str,
    *,
    remat=False,
    chunk_size: int | None = None,
    resets: Resets | None = None,
) -> State:
    """Every state of a linear-recurrence ``cell`` over the projected inputs ``zs: (T, *batch, G)``, in parallel
    over time with ``backend`` (one of :data:`PARALLEL`); ``chunk_size`` overrides the measured one of
    ``"chunked"``; ``resets`` restore a state before the steps they mark. Returns the states as a pytree with
    leaves ``(T, *batch, ...)``."""
    structure = structure_of(cell)
    if structure is None or structure.kind != "linear":
        raise ValueError(
            f"states[{cell.name}]: `cell` must declare a linear recurrence (min_gru, min_lstm, lru) and keep the "
            f"functions it declares (a replaced `project` or `transition` is not the recurrence any more)."
        )
    lin = structure.recurrence
    if chunk_size is None and backend == "chunked":
        chunk_size = choose(zs.shape[0])[1] or None

    def run(params, zs, state, resets):
        a, b = lin.coefficients(params, zs)
        s0 = lin.carry(state)
        s0 = s0.astype(jnp.result_type(s0, a))
        scan = functools.partial(linear_scan, backend=backend, chunk_size=chunk_size, log_space=lin.log_space)
        if resets is None:
            s = scan(a, b, s0)
        else:
            s = _with_resets(scan, a, b, s0, resets.mask, lin.carry(resets.state).astype(s0.dtype), lin.log_space)
        return lin.state(params, s.astype(state_dtype), zs)

    state_dtype = lin.carry(state).dtype
    return checkpointed(run, remat)(params, zs, state, resets)


def _with_resets(scan, a: Array, b: Array, s0: Array, mask: Array, restored: Array, log_space: bool) -> Array:
    """``scan`` of ``s_t = a_t * (restored if mask_t else s_{t-1}) + b_t``, ``mask: (T, *batch)``.

    A reset is the cut ``s_t = a_t * restored + b_t`` (``cuts`` of :func:`linear_scan`). In log space the restored
    state may have either sign, so it cannot join ``log b``; its share is ``u_t * restored`` with ``u_t``, the
    product of ``a`` since the last reset (0 before the first), a second log-space recurrence run in the same scan.
    """
    m = mask[..., None]
    if not log_space:
        return scan(a, jnp.where(m, a * restored + b, b), s0, cuts=mask)
    since = jnp.where(m, a, -jnp.inf)  # log u_t = log a_t + log u_{t-1}, started at log a_t by a reset
    both = jnp.stack([mask, mask], 1)
    s = scan(jnp.stack([a, a], 1), jnp.stack([b, since], 1), jnp.stack([s0, jnp.zeros_like(s0)]), cuts=both)
    return s[:, 0] + s[:, 1] * restored


def _backend(name: str) -> Backend:
    def run(
        cell: Cell, params: Params, xs: Array, state: State, lengths: Array | None, resets: Resets | None, req: Request
    ):
        # Batch-major projection, as the sequential backend's (keeps a sharded batch axis sharded).
        zs = jnp.moveaxis(cell.project(params, jnp.moveaxis(xs, 0, -2)), -2, 0)
        out = states(cell, params, zs, state, name, remat=req.remat, resets=resets)
        return from_states(cell, out, state, lengths, req)

    return Backend(
        name=name,
        supports=lambda req: first_reason(needs_kind(req, "linear", name)),
        prefers=lambda req: tuning.linear_choice(req.num_steps, req.platform)[0] == name,
        run=run,
        description=f"lax.associative_scan {'within chunks ' if name == 'chunked' else ''}of a linear recurrence",
    )


ASSOCIATIVE = _backend("associative")
CHUNKED = _backend("chunked")


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


def segmented(combine: Any) -> Any:
    """``combine`` on ``(a, b, cut)`` triples: where the second map holds a cut, the composition is the second
    map alone (a ``where``, so no NaN of the first reaches it); the cut flags accumulate."""

    def op(first: tuple[Array, Array, Array], second: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        a, b = combine(first[:2], second[:2])
        a2, b2, cut2 = second
        return jnp.where(cut2, a2, a), jnp.where(cut2, b2, b), first[2] | cut2

    return op


def apply_affine(coeffs: tuple[Array, ...], s: Array, log_space: bool) -> Array:
    """``A s + B`` for composed coefficients ``(A, B)`` (logarithms with ``log_space``); with a third, cut, flag
    ``B`` alone where it is set."""
    a, b = coeffs[:2]
    if log_space:
        a, b = jnp.exp(a), jnp.exp(b)
    out = a * s + b
    return out if len(coeffs) == 2 else jnp.where(coeffs[2], b.astype(out.dtype), out)


def _sequential(a: Array, b: Array, s0: Array, cuts: Array, log_space: bool) -> Array:
    def body(s, abc):
        s = apply_affine(abc, s, log_space)
        return s, s

    return jax.lax.scan(body, s0, (a, b, cuts))[1]


def _chunked(combine: Any, a: Array, b: Array, s0: Array, cuts: Array, chunk: int, log_space: bool) -> Array:
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
        cuts = jnp.concatenate([cuts, jnp.zeros((pad, *cuts.shape[1:]), bool)])
    a, b, cuts = (v.reshape(num, chunk, *v.shape[1:]) for v in (a, b, cuts))
    a, b, cuts = jax.lax.associative_scan(combine, (a, b, cuts), axis=1)  # within each chunk, from its start

    def carry(s, abc):
        return apply_affine(abc, s, log_space), s

    _, starts = jax.lax.scan(carry, s0, (a[:, -1], b[:, -1], cuts[:, -1]))  # the state entering each chunk
    s = apply_affine((a, b, cuts), starts[:, None], log_space)
    return s.reshape(num * chunk, *s.shape[2:])[:steps]
