"""Fixed and slow points: minimise ``q(s) = 1/2 || F(s, x*) - s ||^2`` from many starts (Sussillo & Barak, 2013).

The pipeline is three functions, the first two jit- and vmap-able:

1. :func:`minimize_speed`: optax minimisation from many starts at once (vmapped), then a few
   Newton steps ``s <- s - (J - I)^{-1} (F(s) - s)``, each kept only where it lowers ``q``;
2. :func:`linearize`: the Jacobian's eigen-decomposition at a point, its stability class and time constants;
3. :func:`find_fixed_points`: both, plus the data-dependent part (tolerance filter, de-duplication),
   which runs eagerly on concrete values;
4. :func:`slow_manifold`: what the set of points found is: isolated attractors, a line attractor (Seung, 1996;
   Mante et al., 2013), a plane..., from the eigenvalues near 1 and the points' principal components.

States with complex fields (the LRU's ``x``) are searched and linearised in the real view of
:func:`recurrax.dynamics.flatten` (two real coordinates per complex unit, ``S`` counting them twice):
the optimiser steps on real vectors, and a complex eigenvalue ``lambda`` of the recurrence appears
with its conjugate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.jacobians import step_jacobian

STABLE, UNSTABLE, SADDLE = 0, 1, 2
STABILITY_NAMES = ("stable", "unstable", "saddle")


class Linearization(NamedTuple):
    """The linearisation of ``s -> F(s, x*)`` at a point.

    Attributes:
      eigenvalues: ``(S,)`` complex, sorted by decreasing modulus.
      eigenvectors: ``(S, S)`` complex, columns matching ``eigenvalues``.
      stability: ``STABLE`` (all ``|lambda| < 1``), ``UNSTABLE`` (all ``> 1``) or ``SADDLE`` (some each);
        ``STABILITY_NAMES[stability]`` names it.
      time_constants: ``(S,)``, ``-1 / log |lambda|`` in steps (``inf`` where ``|lambda| >= 1``), for the
        eigenvalues in order: the first is the slowest decaying (or non-decaying) mode.
    """

    eigenvalues: Array
    eigenvectors: Array
    stability: Array
    time_constants: Array


class FixedPoints(NamedTuple):
    """The distinct points found, ``M`` of them, most precise first.

    Attributes:
      states: leaves ``(M, n)``.
      q: ``(M,)``, the speed ``q`` at each point.
      linearization: a :class:`Linearization` with a leading ``M`` axis.
      num_candidates: starts run; ``num_converged``: those under ``tol_q`` (before de-duplication).
    """

    states: State
    q: Array
    linearization: Linearization
    num_candidates: int
    num_converged: int


@_flat.on_steps
def speed(cell: Cell, params: Params, state: State, x: Array) -> Array:
    """``q(s) = 1/2 || step(params, s, x) - s ||^2`` at one state (leaves ``(n,)``) and input ``x: (I,)``."""
    fn = "dynamics.speed"
    x = _flat.check_point(fn, cell, params, state, x)
    f = _flat.step_fn(cell, params, state)
    s = _flat.flatten(state)
    return 0.5 * jnp.sum(jnp.square(f(s, cell.project(params, x)) - s))


@_flat.on_steps
def minimize_speed(
    cell: Cell,
    params: Params,
    x: Array,
    states: State,
    *,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 2000,
    newton_steps: int = 5,
) -> tuple[State, Array]:
    """Minimises ``q`` from every start in ``states`` (leaves ``(N, n)``) at the constant input ``x: (I,)``.

    Args:
      optimizer: default Adam from ``1e-2`` decayed (cosine) to ``1e-5`` over ``num_steps``: a constant step
        size leaves the end points hovering at a distance of about the step size.
      num_steps: optimizer steps (every start runs all of them).
      newton_steps: Newton refinements afterwards; each is taken only where it lowers ``q``.

    Returns:
      ``(states, q)``: the end points (leaves ``(N, n)``) and their speeds ``(N,)``.
    """
    fn = "dynamics.minimize_speed"
    x = _flat.check_inputs(fn, cell, params, x, "x", sequence=False)
    _flat.check_count(fn, "num_steps", num_steps, low=0)
    _flat.check_count(fn, "newton_steps", newton_steps, low=0)
    like = jax.tree.map(lambda s: s[0], states)
    _flat.check_state(fn, like, "states[i]", cell, params)
    if optimizer is None:
        optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, max(num_steps, 1), alpha=1e-3))
    f = _flat.step_fn(cell, params, like)
    z = cell.project(params, x)

    def q(s):
        return 0.5 * jnp.sum(jnp.square(f(s, z) - s))

    def descend(s):
        def body(carry, _):
            s, opt_state = carry
            grads = jax.grad(q)(s)
            updates, opt_state = optimizer.update(grads, opt_state, s)
            return (optax.apply_updates(s, updates), opt_state), None

        s = jax.lax.scan(body, (s, optimizer.init(s)), None, length=num_steps)[0][0]

        def newton(_, s):
            residual = f(s, z) - s
            jac = jax.jacfwd(f)(s, z) - jnp.eye(s.shape[0], dtype=s.dtype)
            trial = s - jnp.linalg.solve(jac, residual)
            better = jnp.all(jnp.isfinite(trial)) & (q(trial) < q(s))
            return jnp.where(better, trial, s)

        s = jax.lax.fori_loop(0, newton_steps, newton, s)
        return s, q(s)

    flat, speeds = jax.vmap(descend)(_flat.flatten(states))
    return _flat.unflatten(like, flat), speeds


@_flat.on_steps
def linearize(cell: Cell, params: Params, state: State, x: Array) -> Linearization:
    """The eigen-decomposition of ``d step(s, x) / d s`` at ``state`` (leaves ``(n,)``): class, time constants."""
    return linearize_matrix(step_jacobian(cell, params, state, x).matrix)


def linearize_matrix(matrix: Array) -> Linearization:
    """:class:`Linearization` of a map's Jacobian ``matrix: (S, S)`` (e.g. ``StepJacobian.matrix``)."""
    matrix = _flat.check_square("dynamics.linearize_matrix", matrix, batched=False)
    eigenvalues, eigenvectors = jnp.linalg.eig(matrix)
    order = jnp.argsort(-jnp.abs(eigenvalues))
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    modulus = jnp.abs(eigenvalues)
    stability = jnp.where(jnp.all(modulus < 1), STABLE, jnp.where(jnp.all(modulus > 1), UNSTABLE, SADDLE))
    return Linearization(eigenvalues, eigenvectors, stability, eigen_time_constants(eigenvalues))


def eigen_time_constants(eigenvalues: Array) -> Array:
    """``-1 / log |lambda|`` per eigenvalue, in steps: each linear mode's decay time (``inf`` if it does not decay)."""
    modulus = jnp.abs(eigenvalues)
    return jnp.where(modulus < 1, -1.0 / jnp.log(jnp.minimum(modulus, 1.0 - 1e-12)), jnp.inf)


@_flat.on_steps
def find_fixed_points(
    cell: Cell,
    params: Params,
    x: Array,
    states: State,
    *,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 2000,
    newton_steps: int = 5,
    tol_q: float = 1e-10,
    tol_unique: float = 1e-3,
) -> FixedPoints:
    """Finds the distinct fixed (or, with a looser ``tol_q``, slow) points reached from the starts ``states``.

    Eager: the number of points found depends on the values (call :func:`minimize_speed` and
    :func:`linearize` inside ``jit``/``vmap`` instead).

    Args:
      cell, params: the cell and its params.
      x: the constant input ``(I,)`` (zeros for the autonomous system).
      states: the starts, leaves ``(N, n)``: e.g. states sampled from trajectories, plus noise.
      optimizer, num_steps, newton_steps: see :func:`minimize_speed`.
      tol_q: keep end points with ``q < tol_q``.
      tol_unique: end points closer than this (Euclidean, flat state) are one point; the lowest ``q`` is kept.

    Returns:
      :class:`FixedPoints`.
    """
    fn = "dynamics.find_fixed_points"
    x = _flat.check_inputs(fn, cell, params, x, "x", sequence=False)
    ends, q = minimize_speed(
        cell, params, x, states, optimizer=optimizer, num_steps=num_steps, newton_steps=newton_steps
    )
    flat, q = np.asarray(_flat.flatten(ends)), np.asarray(q)
    finite = np.isfinite(q) & np.all(np.isfinite(flat), axis=-1)
    converged = np.flatnonzero(finite & (q < tol_q))
    kept: list[int] = []
    for i in converged[np.argsort(q[converged], kind="stable")]:
        if all(np.linalg.norm(flat[i] - flat[j]) >= tol_unique for j in kept):
            kept.append(int(i))
    index = np.asarray(kept, dtype=np.int32)
    points = jax.tree.map(lambda s: s[index], ends)
    if len(kept):
        lin = jax.vmap(lambda s: linearize(cell, params, s, x))(points)
    else:
        size = flat.shape[-1]
        empty = jnp.zeros((0, size), jnp.complex64)
        lin = Linearization(empty[:, 0], empty.reshape(0, size, size), jnp.zeros((0,), jnp.int32), jnp.zeros((0, size)))
    return FixedPoints(points, jnp.asarray(q[index]), lin, int(flat.shape[0]), int(converged.size))


class SlowManifold(NamedTuple):
    """A summary of a set of fixed (or slow) points as a manifold of memory states; see :func:`slow_manifold`.

    Attributes:
      marginal: ``(M,)`` int, how many eigenvalues of each point's Jacobian have ``| |lambda| - 1 | < tol``:
        directions the dynamics neither contract nor expand (1 along a line attractor, 2 on a plane).
      dimension: the most common ``marginal`` count (0 for isolated points); ties go to the smaller count.
      explained: ``(S,)``, the fraction of the points' variance along each principal component, decreasing
        (zeros for fewer than two distinct points).
      alignment: ``(M,)``, ``|cos|`` between each point's slowest mode (the eigenvector of the eigenvalue of
        largest modulus, its real part) and the points' first principal component: near 1 where the manifold
        runs along the marginal direction, as on a line attractor.
    """

    marginal: Array
    dimension: Array
    explained: Array
    alignment: Array


def slow_manifold(points: FixedPoints, *, tol: float = 0.05) -> SlowManifold:
    """Line-attractor and slow-manifold summaries of ``points`` (from :func:`find_fixed_points`), jit-able.

    A line attractor shows as ``dimension == 1``, ``explained[0]`` near 1 and ``alignment`` near 1: a continuum
    of fixed points along one line, each with one marginal direction pointing along it.

    Args:
      points: the fixed points and their linearisations (leading axis ``M``).
      tol: how close to 1 an eigenvalue's modulus must be to count as marginal.

    Returns:
      A :class:`SlowManifold`.
    """
    lin = points.linearization
    moduli = jnp.abs(lin.eigenvalues)  # (M, S)
    marginal = jnp.sum(jnp.abs(moduli - 1.0) < tol, axis=-1)
    size = moduli.shape[-1]
    counts = jnp.sum(marginal[:, None] == jnp.arange(size + 1)[None, :], axis=0)
    dimension = jnp.argmax(counts)
    flat = _flat.flatten(points.states)  # (M, S)
    centred = flat - jnp.mean(flat, axis=0, keepdims=True)
    _, singular, vt = jnp.linalg.svd(centred, full_matrices=True)
    variance = jnp.zeros((size,), singular.dtype).at[: singular.shape[0]].set(singular**2)
    total = jnp.sum(variance)
    explained = jnp.where(total > 0, variance / jnp.where(total > 0, total, 1.0), 0.0)
    slowest = jnp.real(lin.eigenvectors[:, :, 0])  # (M, S): the mode of largest modulus
    slowest = slowest / jnp.maximum(jnp.linalg.norm(slowest, axis=-1, keepdims=True), 1e-30)
    alignment = jnp.abs(slowest @ vt[0])
    return SlowManifold(marginal, dimension, explained, alignment)
