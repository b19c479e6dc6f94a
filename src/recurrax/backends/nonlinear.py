"""``newton``: every step of a nonlinear recurrence at once, by Newton's method on the whole trajectory.

Write the run as ``s_t = F_t(s_{t-1})`` (``F_t`` is ``cell.transition`` with ``x_t``'s projection, the reset
before step ``t`` and the freeze past each length folded in). Given a guess ``g`` of every state, one iteration
linearises each step around it, ``s_t ~ J_t s_{t-1} + (F_t(g_{t-1}) - J_t g_{t-1})`` with
``J_t = dF_t/ds (g_{t-1})``, and solves that *linear* recurrence for all ``t`` with ``lax.associative_scan``, in
``O(log T)`` depth (DEER: Lim et al. 2023). ``method="diagonal"`` keeps only the diagonal of each ``J_t``
(quasi-DEER: Gonzalez et al. 2024), exact or estimated with Hutchinson probes, so the scan is elementwise and
memory ``O(T N)`` instead of ``O(T N^2)``. ``damping > 0`` solves each linearised step as a trust region
around the guess (ELK, Gonzalez et al. 2024): ``min sum_t |s_t - J_t s_{t-1} - c_t|^2 + damping |s_t - g_t|^2``,
a Kalman smoother run as a parallel scan (Sarkka & Garcia-Fernandez 2021), which keeps iterations from
overshooting where the dynamics are unstable.

Newton's iterations are exact after at most ``T`` full iterations (each fixes at least one more step), and few
suffice when the dynamics are predictable (largest Lyapunov exponent below 0: Gonzalez et al. 2025, "Predictability
enables parallelization of nonlinear state space models"); :func:`recurrax.dynamics.parallelizability` measures
it. A chaotic run needs about ``T`` iterations, so an unconverged solve never passes for a converged one: it
falls back to ``sequential`` (default), returns NaN, or raises, as :func:`newton` is told.

Derivatives follow the implicit-function rule at the solution, not the iterations: the tangent is the linear
recurrence ``ds_t = J_t ds_{t-1} + dF_t`` (``dF_t``: the step's derivative in params, inputs and reset state),
solved by the same associative scan with the dense ``J_t`` for ``method="full"``, and by a ``lax.scan`` of the
step's ``jvp`` for ``"diagonal"`` (exact, but sequential in time). It is linear in the tangents, so JAX
transposes it into the backward pass: one reverse linear scan with ``J_t^T``, then the step's vjp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import core
from recurrax.backends.base import (
    Backend,
    Request,
    Resets,
    checkpointed,
    first_reason,
    from_states,
    restore,
    valid_mask,
    where_valid,
)
from recurrax.core import Array, Cell, Params, State

METHODS = ("full", "diagonal")
DIAGONALS = ("exact", "hutchinson")
ON_FAILURE = ("sequential", "nan", "raise")


class Config(NamedTuple):
    """How :func:`newton` solves (its arguments, checked)."""

    method: str = "full"
    diagonal: str = "exact"
    probes: int = 1
    key: Array | None = None
    damping: float = 0.0
    tol: float | None = None
    max_iters: int = 100
    on_failure: str = "sequential"


class Info(NamedTuple):
    """What one solve did (:func:`solve`).

    Attributes:
      iterations: the Newton iterations run (``int32`` scalar).
      residual: ``max_t |s_t - F_t(s_{t-1})|`` of the last Newton iterate, relative to ``max(1, max |F_t(s_{t-1})|)``.
      converged: whether ``residual <= tol`` (and finite); if not, the states returned came from ``on_failure``.
    """

    iterations: Array
    residual: Array
    converged: Array


# ------------------------------------------------------------------------------------------- flat states


class _Flat(NamedTuple):
    """A state pytree with leaves ``(*lead, *feature)`` as one ``(*lead, N)`` array, and back."""

    tree: Any
    features: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]

    @staticmethod
    def of(state: State, lead: int) -> _Flat:
        leaves, tree = jax.tree.flatten(state)
        return _Flat(tree, tuple(tuple(x.shape[lead:]) for x in leaves), tuple(x.dtype for x in leaves))

    @property
    def size(self) -> int:
        return sum(math.prod(f) for f in self.features)

    def flatten(self, state: State, lead: int) -> Array:
        leaves = jax.tree.leaves(state)
        dtype = jnp.result_type(*self.dtypes)
        return jnp.concatenate([x.reshape(*x.shape[:lead], -1).astype(dtype) for x in leaves], axis=-1)

    def unflatten(self, vec: Array) -> State:
        cuts = np.cumsum([math.prod(f) for f in self.features])[:-1]
        parts = jnp.split(vec, cuts, axis=-1)
        leaves = [p.reshape(*p.shape[:-1], *f).astype(d) for p, f, d in zip(parts, self.features, self.dtypes)]
        return jax.tree.unflatten(self.tree, leaves)


# ------------------------------------------------------------------------------------ the linear solves


def _matvec(a: Array, s: Array) -> Array:
    return jnp.einsum("...ij,...j->...i", a, s)


def _affine(a: Array, b: Array, s0: Array, dense: bool) -> Array:
    """Every ``s_t = a_t s_{t-1} + b_t`` (time axis 0; ``a_t`` ``(..., N, N)`` if ``dense`` else ``(..., N)``)."""
    mul = (lambda x, y: x @ y) if dense else (lambda x, y: x * y)
    app = _matvec if dense else (lambda x, y: x * y)

    def combine(first, second):
        (a1, b1), (a2, b2) = first, second
        return mul(a2, a1), app(a2, b1) + b2

    prod, acc = jax.lax.associative_scan(combine, (a, b))
    return app(prod, s0[None]) + acc


def _ops(dense: bool):
    """``(mul, app, tr)``: matrix product, matrix-vector product and transpose, dense or diagonal."""
    if dense:
        return (lambda x, y: x @ y), _matvec, (lambda x: jnp.swapaxes(x, -1, -2))
    return (lambda x, y: x * y), (lambda x, y: x * y), (lambda x: x)


def _affine(a: Array, b: Array, s0: Array, dense: bool) -> Array:
    """Every ``s_t = a_t s_{t-1} + b_t`` (time axis 0; ``a_t`` ``(..., N, N)`` if ``dense`` else ``(..., N)``)."""
    mul, app, _ = _ops(dense)

    def combine(first, second):
        (a1, b1), (a2, b2) = first, second
        return mul(a2, a1), app(a2, b1) + b2

    prod, acc = jax.lax.associative_scan(combine, (a, b))
    return app(prod, s0[None]) + acc


def _smoothed(a: Array, f: Array, c: Array, guess: Array, damping: float, dense: bool) -> Array:
    """The trust-region step: ``argmin_s sum_t |s_t - a_t s_{t-1} - c_t|^2 + damping |s_t - guess_t|^2``.

    That is the posterior mean of the linear-Gaussian model ``s_t = a_t s_{t-1} + c_t + N(0, I)`` observed as
    ``guess_t = s_t + N(0, I / damping)``, from the known ``s_{-1}`` (so ``s_0``'s prior is ``N(f_0, I)``): a
    Kalman filter and an RTS smoother, each an associative scan (Sarkka & Garcia-Fernandez 2021, with their
    ``H = I``, ``Q = I``, ``R = I / damping``). ``damping = 0`` is the plain linear recurrence.
    """
    mul, app, tr = _ops(dense)
    n = c.shape[-1]
    eye = jnp.eye(n, dtype=c.dtype) if dense else jnp.ones((n,), c.dtype)
    # With Q = I and R = I / d the gain is K = k I, k = d / (1 + d), and S^-1 = k I.
    k = jnp.asarray(damping / (1 + damping), c.dtype)
    innov = guess - c
    big_a = (1 - k) * a.at[0].set(0)  # s_{-1} is known: the first element carries no dependence on it
    big_b = ((1 - k) * c + k * guess).at[0].set((1 - k) * f[0] + k * guess[0])
    big_c = jnp.broadcast_to((1 - k) * eye, a.shape)
    eta = (k * app(tr(a), innov)).at[0].set(0)
    big_j = (k * mul(tr(a), a)).at[0].set(0)

    def combine(first, second):
        a1, b1, c1, e1, j1 = first
        a2, b2, c2, e2, j2 = second
        m = jnp.linalg.inv(eye + c1 @ j2) if dense else 1 / (1 + c1 * j2)
        mt = tr(m)  # (I + J2 C1)^-1 = ((I + C1 J2)^-1)^T, as C and J are symmetric
        a2m = mul(a2, m)
        return (
            mul(a2m, a1),
            app(a2m, b1 + app(c1, e2)) + b2,
            mul(mul(a2m, c1), tr(a2)) + c2,
            app(mul(tr(a1), mt), e2 - app(j2, b1)) + e1,
            mul(mul(mul(tr(a1), mt), j2), a1) + j1,
        )

    _, mean, cov, _, _ = jax.lax.associative_scan(combine, (big_a, big_b, big_c, eta, big_j))
    # The smoother: x_t = E_t x_{t+1} + g_t backwards from x_{T-1} = m_{T-1}, where
    # E_t = P_t a_{t+1}^T (a_{t+1} P_t a_{t+1}^T + I)^-1 and g_t = m_t - E_t (a_{t+1} m_t + c_{t+1}).
    a_next, c_next, p = a[1:], c[1:], cov[:-1]
    pred = mul(mul(a_next, p), tr(a_next)) + eye
    gain = mul(mul(p, tr(a_next)), jnp.linalg.inv(pred) if dense else 1 / pred)
    g = mean[:-1] - app(gain, app(a_next, mean[:-1]) + c_next)
    gain = jnp.concatenate([gain, jnp.zeros_like(gain[:1])])
    g = jnp.concatenate([g, mean[-1:]])
    flip = lambda x: jnp.flip(x, 0)  # noqa: E731
    return flip(_affine(flip(gain), flip(g), jnp.zeros_like(mean[0]), dense))


# ----------------------------------------------------------------------------------------- the problem


class _Problem(NamedTuple):
    """One run as ``s_t = F_t(s_{t-1})`` on flat states ``(*lead, *batch, N)``; ``F`` is batch-polymorphic."""

    cell: Cell
    flat: _Flat
    nb: int  # batch dims

    def step(self, params: Params, z: Array, reset_state: State, masks: tuple, s_prev: Array) -> Array:
        """``F`` for inputs with leading dims ``lead`` (time, or none), ``masks = (reset, valid)`` (or ``None``s)."""
        reset, valid = masks
        lead = s_prev.ndim - 1 - self.nb
        prev = self.flat.unflatten(s_prev)
        if reset is not None:
            prev = restore(reset, prev, jax.tree.map(lambda r, p: jnp.broadcast_to(r, p.shape), reset_state, prev))
        new = self.cell.transition(params, prev, z)
        if valid is not None:
            new = jax.tree.map(lambda n, p: where_valid(valid, n, p), new, prev)
        return self.flat.flatten(new, lead + self.nb)


def _shift(s0: Array, s: Array) -> Array:
    """``s_{t-1}`` for every ``t``: the states one step later, ``s0`` first."""
    return jnp.concatenate([s0[None], s[:-1]])


def _columns(fn: Callable[[Array], Array], s: Array, basis: Array) -> Array:
    """``dfn/ds`` applied to each row of ``basis`` (broadcast over ``s``'s leading dims), stacked last."""
    return jax.vmap(lambda e: jax.jvp(fn, (s,), (jnp.broadcast_to(e, s.shape).astype(s.dtype),))[1], out_axes=-1)(basis)


def _jacobians(fn: Callable[[Array], Array], s: Array, cfg: Config, it: Array) -> Array:
    """``J_t = dF_t/ds`` at ``s``: ``(*lead, N, N)`` for ``"full"``, else the diagonal ``(*lead, N)``."""
    n = s.shape[-1]
    if cfg.method == "full":
        return _columns(fn, s, jnp.eye(n, dtype=s.dtype))
    if cfg.diagonal == "exact":
        # One basis vector at a time keeps memory at O(T N) (the dense Jacobians would be O(T N^2)).
        def entry(j):
            return jax.jvp(fn, (s,), (jnp.broadcast_to(jax.nn.one_hot(j, n, dtype=s.dtype), s.shape),))[1][..., j]

        return jnp.moveaxis(jax.lax.map(entry, jnp.arange(n)), 0, -1)
    probes = jax.random.rademacher(jax.random.fold_in(cfg.key, it), (cfg.probes, *s.shape), s.dtype)
    tangents = jax.vmap(lambda v: jax.jvp(fn, (s,), (v,))[1])(probes)
    return jnp.mean(probes * tangents, axis=0)


def _residual(fn: Callable[[Array], Array], s0: Array, s: Array) -> tuple[Array, Array]:
    """``(F_t(s_{t-1}) for every t, max_t |s_t - F_t(s_{t-1})|)``, the residual relative to ``max(1, max |F|)``.

    Scaled by the steps' values rather than the guess's: a diverged guess (a chaotic run's Jacobian products
    overflow) must not make its own residual look small.
    """
    f = fn(_shift(s0, s))
    scale = jnp.maximum(1, jnp.max(jnp.abs(f), initial=0))
    finite = jnp.all(jnp.isfinite(s)) & jnp.all(jnp.isfinite(f))  # XLA's max may drop a NaN
    return f, jnp.where(finite, jnp.max(jnp.abs(s - f), initial=0) / scale, jnp.inf)


def _iterate(fn: Callable[[Array], Array], s0: Array, guess: Array, cfg: Config, tol: float):
    """Newton's iterations from ``guess`` until the residual is within ``tol`` or ``max_iters`` ran:
    ``(states, iterations, residual)``."""
    dense = cfg.method == "full"
    _, app, _ = _ops(dense)

    def body(carry):
        g, f, it, _ = carry  # f: the steps at the guess, computed by the residual that judged it
        prev = _shift(s0, g)
        jac = _jacobians(fn, prev, cfg, it)
        c = f - app(jac, prev)
        new = _affine(jac, c, s0, dense) if cfg.damping == 0 else _smoothed(jac, f, c, g, cfg.damping, dense)
        f_new, res = _residual(fn, s0, new)
        return new, f_new, it + 1, res

    def unfinished(carry):
        _, _, it, res = carry
        return (res > tol) & (it < cfg.max_iters) & jnp.isfinite(res)  # a NaN never recovers

    f0, res0 = _residual(fn, s0, guess)
    states, _, iterations, residual = jax.lax.while_loop(unfinished, body, (guess, f0, jnp.int32(0), res0))
    return states, iterations, residual


def _fail(converged: Array, iterations: Array, residual: Array) -> None:
    if not bool(np.all(converged)):
        raise ValueError(
            f"newton: not converged after {int(np.max(iterations))} iterations (residual "
            f"{float(np.max(residual)):.3g}); the dynamics may be chaotic (see recurrax.dynamics.parallelizability), "
            f"or raise `max_iters`, or pass on_failure='sequential'."
        )


def _solver(problem: _Problem, cfg: Config, tol: float) -> Callable:
    """``solve(params, zs, s0, reset_state, masks, guess) -> (states, iterations, residual, converged)``, flat."""

    def sequential(params, zs, s0, reset_state, masks):
        def body(s, inputs):
            z, m = inputs
            new = problem.step(params, z, reset_state, m, s)
            return new, new

        return jax.lax.scan(body, s0, (zs, masks))[1]

    @jax.custom_jvp
    def solve(params, zs, s0, reset_state, masks, guess):
        fn = lambda s: problem.step(params, zs, reset_state, masks, s)  # noqa: E731
        states, iterations, residual = _iterate(fn, s0, guess, cfg, tol)
        converged = residual <= tol
        if cfg.on_failure == "sequential":
            states = jax.lax.cond(
                converged, lambda: states, lambda: sequential(params, zs, s0, reset_state, masks).astype(states.dtype)
            )
        elif cfg.on_failure == "nan":
            states = jnp.where(converged, states, jnp.nan)
        elif isinstance(converged, jax.core.Tracer):
            jax.debug.callback(_fail, converged, iterations, residual)
        else:
            _fail(converged, iterations, residual)
        return states, iterations, residual, converged

    @solve.defjvp
    def solve_jvp(primals, tangents):
        params, zs, s0, reset_state, masks, _ = primals
        d_params, d_zs, d_s0, d_reset, _, _ = tangents
        out = solve(*primals)
        states = out[0]
        prev = _shift(s0, states)
        # The step's derivative in everything but the previous state, at the solution ...
        _, rhs = jax.jvp(
            lambda p, z, r: problem.step(p, z, r, masks, prev), (params, zs, reset_state), (d_params, d_zs, d_reset)
        )
        # ... carried through time by the linearised recurrence: ds_t = J_t ds_{t-1} + rhs_t.
        if cfg.method == "full":
            fn = lambda s: problem.step(params, zs, reset_state, masks, s)  # noqa: E731
            d_states = _affine(_columns(fn, prev, jnp.eye(prev.shape[-1], dtype=prev.dtype)), rhs, d_s0, True)
        else:

            def body(ds, inputs):
                z, m, p, r = inputs
                step = lambda s: problem.step(params, z, reset_state, m, s)  # noqa: E731
                new = jax.jvp(step, (p,), (ds,))[1] + r
                return new, new

            d_states = jax.lax.scan(body, d_s0, (zs, masks, prev, rhs))[1]
        zero = lambda x: np.zeros(np.shape(x), jax.dtypes.float0)  # noqa: E731
        return out, (d_states, zero(out[1]), jnp.zeros_like(out[2]), zero(out[3]))

    return solve


# ------------------------------------------------------------------------------------ the backend


def _check_config(cfg: Config) -> Config:
    if cfg.method not in METHODS:
        raise ValueError(f"newton: `method` must be one of {METHODS}, got {cfg.method!r}.")
    if cfg.diagonal not in DIAGONALS:
        raise ValueError(f"newton: `diagonal` must be one of {DIAGONALS}, got {cfg.diagonal!r}.")
    if cfg.on_failure not in ON_FAILURE:
        raise ValueError(f"newton: `on_failure` must be one of {ON_FAILURE}, got {cfg.on_failure!r}.")
    for arg in ("max_iters", "probes"):
        value = getattr(cfg, arg)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"newton: `{arg}` must be a positive int, got {value!r}.")
    damping = float(cfg.damping)
    if not (np.isfinite(damping) and damping >= 0):
        raise ValueError(f"newton: `damping` must be a finite number >= 0, got {cfg.damping!r}.")
    if cfg.tol is not None and not (np.isfinite(cfg.tol) and cfg.tol > 0):
        raise ValueError(f"newton: `tol` must be a finite number > 0, got {cfg.tol!r}.")
    if cfg.method == "diagonal" and cfg.diagonal == "hutchinson":
        if cfg.key is None:
            raise ValueError("newton: diagonal='hutchinson' needs `key`, the PRNG key of its probes.")
        core.check_key("newton", cfg.key)
    return cfg._replace(damping=damping)


def _tolerance(cfg: Config, dtype: Any) -> float:
    # Relative to the state's scale: float32 round-off in F alone leaves residuals of a few eps.
    return float(cfg.tol) if cfg.tol is not None else float(8 * jnp.finfo(dtype).eps)


def _supports(req: Request) -> str | None:
    complex_ = [d for d in req.dtypes if d.startswith("complex")]
    return first_reason(
        f"'newton' needs a real state and params, got {complex_[0]} (the LRU's state is complex; it is a linear "
        f"recurrence, which 'associative' runs exactly)"
        if complex_
        else None,
        # Newton's solve treats every batch position as an independent system; a convolution couples them.
        "'newton' solves each batch position's state apart, but a convolutional cell couples its spatial positions"
        if req.feature_axes > 1
        else None,
    )


def _run_flat(cell, params, zs, state, lengths, resets, nb, cfg, guess=None):
    """``(states (T, *batch, N) flat, info, flat)`` for projected time-major inputs ``zs``."""
    flat = _Flat.of(state, nb)
    problem = _Problem(cell, flat, nb)
    s0 = flat.flatten(state, nb)
    num_steps = zs.shape[0]
    valid = None if lengths is None else valid_mask(num_steps, lengths)
    masks = (None if resets is None else resets.mask, valid)
    reset_state = None if resets is None else resets.state
    if guess is None:
        guess = jnp.zeros((num_steps, *s0.shape), s0.dtype)
    solve = _solver(problem, cfg, _tolerance(cfg, s0.dtype))
    states, iterations, residual, converged = solve(params, zs, s0, reset_state, masks, guess)
    return states, Info(iterations, residual, converged), flat


def _backend_run(cfg: Config):
    def run(
        cell: Cell, params: Params, xs: Array, state: State, lengths: Array | None, resets: Resets | None, req: Request
    ):
        # Batch-major projection, as the sequential backend's (keeps a sharded batch axis sharded).
        zs = jnp.moveaxis(cell.project(params, jnp.moveaxis(xs, 0, -2)), -2, 0)
        nb = len(req.batch_shape)
        solve = checkpointed(lambda p, z, s: _run_flat(cell, p, z, s, lengths, resets, nb, cfg)[0], req.remat)
        states = _Flat.of(state, nb).unflatten(solve(params, zs, state))
        return from_states(cell, states, state, lengths, req)

    return run


def newton(
    method: str = "full",
    *,
    diagonal: str = "exact",
    probes: int = 1,
    key: Array | None = None,
    damping: float = 0.0,
    tol: float | None = None,
    max_iters: int = 100,
    on_failure: str = "sequential",
) -> Backend:
    """A Newton backend for ``scan(..., backend=newton(...))`` (module docstring); ``"newton"`` is ``newton()``.

    Args:
      method: ``"full"`` (DEER: dense ``N x N`` Jacobians, small states) or ``"diagonal"`` (quasi-DEER).
      diagonal: for ``"diagonal"``: ``"exact"`` (``N`` Jacobian-vector products per iteration) or
        ``"hutchinson"`` (``probes`` random ones: ``E[v * J v]`` with Rademacher ``v``; needs ``key``).
      probes: Hutchinson probes per iteration.
      key: the PRNG key of the Hutchinson probes.
      damping: the trust-region weight of ELK (``0``: plain Newton); larger is more cautious.
      tol: the largest residual ``max_t |s_t - F_t(s_{t-1})| / max(1, max_t |F_t(s_{t-1})|)`` accepted as converged
        (default ``8 * eps`` of the state's dtype: ``9.5e-7`` in float32).
      max_iters: the iteration cap (full Newton is exact after ``T``).
      on_failure: what an unconverged solve returns: ``"sequential"`` (the ``lax.scan`` result, computed only
        then outside ``vmap``), ``"nan"`` (every state NaN), or ``"raise"`` (a ``ValueError``; under ``jit`` an
        error raised from a host callback when the computation runs).
    """
    cfg = _check_config(Config(method, diagonal, probes, key, damping, tol, max_iters, on_failure))
    name = "newton" if cfg == Config() else f"newton({method})"
    return Backend(
        name=name,
        supports=_supports,
        prefers=lambda req: False,
        run=_backend_run(cfg),
        description="Newton's method on the whole trajectory, parallel in time (DEER / quasi-DEER / ELK)",
    )


NEWTON = newton()


def solve(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    guess: State | None = None,
    **config: Any,
) -> tuple[State, Info]:
    """Every state of ``cell`` over ``xs`` by Newton's method, and what the solve did.

    Args:
      cell, params: the cell and its params.
      xs: inputs ``(*batch, T, I)``.
      state: the initial state (zeros when ``None``).
      guess: every state's first guess, as the ``states`` returned (e.g. the previous solution, for warm starts
        in training); zeros when ``None``.
      **config: :func:`newton`'s arguments.

    Returns:
      ``(states, info)``: ``states`` leaves ``(*batch, T, ...)`` (as ``scan(..., return_states=True)``) and an
      :class:`Info`.
    """
    cfg = _check_config(Config(**config))
    xs = jnp.asarray(xs)
    if xs.ndim < 2:
        raise ValueError(f"newton.solve: `xs` must have shape (*batch, T, I), got {tuple(xs.shape)}.")
    batch = xs.shape[:-2]
    if state is None:
        state = cell.initial_state(params, batch)
    else:
        core.check_state(cell.name, cell.initial_state, params, state, batch)
    nb = len(batch)
    zs = jnp.moveaxis(cell.project(params, xs), -2, 0)
    flat = _Flat.of(state, nb)
    if guess is not None:
        core.check_state("newton.solve", cell.initial_state, params, guess, (*batch, xs.shape[-2]), arg="guess")
        guess = flat.flatten(jax.tree.map(lambda g: jnp.moveaxis(g, nb, 0), guess), nb + 1)
    states, info, flat = _run_flat(cell, params, zs, state, None, None, nb, cfg, guess)
    return jax.tree.map(lambda s: jnp.moveaxis(s, 0, nb), flat.unflatten(states)), info


__all__ = ["NEWTON", "Info", "newton", "solve"]
