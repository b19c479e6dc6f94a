"""``dynamics.slow_manifold``: line and plane attractors of linear recurrences whose answer is known exactly.

``h' = A h`` with ``A = Q diag(lambda) Q^T``: its fixed points are the eigenvectors of eigenvalue 1 and their
span, so one eigenvalue 1 gives a line attractor along ``Q[:, 0]``, two a plane, none the origin alone. The
summaries are checked against NumPy's eigenvalues and SVD of the points found.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn

S = 4


def _linear(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(S, S)))
    a = q @ np.diag(eigenvalues) @ q.T
    cell = rx.elman(S, activation=lambda v: v, use_bias=False)
    params = {"w_i": jnp.zeros((2, S)), "w_h": jnp.asarray(a.T, jnp.float32)}  # h' = h W_h = A h
    starts = rx.RNNState(jax.random.normal(jax.random.key(seed), (24, S)))
    points = dyn.find_fixed_points(cell, params, jnp.zeros(2), starts, tol_unique=1e-2)
    return points, q, a


@pytest.mark.parametrize(
    ("eigenvalues", "dimension"),
    [([1.0, 0.5, 0.3, 0.1], 1), ([1.0, 1.0, 0.4, 0.2], 2), ([0.6, 0.5, 0.3, 0.1], 0)],
    ids=["line", "plane", "point"],
)
def test_slow_manifold_of_known_attractors(eigenvalues, dimension):
    points, q, a = _linear(eigenvalues)
    got = jax.jit(dyn.slow_manifold)(points)
    flat = np.asarray(points.states.h, np.float64)
    want_marginal = np.sum(np.abs(np.abs(np.linalg.eigvals(a)) - 1.0) < 0.05)
    np.testing.assert_array_equal(got.marginal, np.full(len(flat), want_marginal))
    assert int(got.dimension) == dimension
    if len(flat) > 1:
        singular = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
        np.testing.assert_allclose(got.explained[: len(singular)], singular**2 / np.sum(singular**2), atol=1e-5)
        assert float(np.sum(got.explained[:dimension])) > 0.999  # the points span exactly the marginal directions
    else:
        np.testing.assert_array_equal(got.explained, 0.0)  # one point: no spread
    if dimension == 1:
        np.testing.assert_allclose(got.alignment, 1.0, atol=1e-4)  # the slow mode runs along the line
        np.testing.assert_allclose(np.abs(flat @ q[:, 0]), np.linalg.norm(flat, axis=1), rtol=1e-4)
    eager = dyn.slow_manifold(points)
    for g, e in zip(got, eager):
        np.testing.assert_allclose(g, e, atol=1e-6)


def test_tol_sets_what_counts_as_marginal():
    points, _, _ = _linear([0.97, 0.5, 0.3, 0.1])  # a slow point at the origin, not an attractor line
    assert int(dyn.slow_manifold(points, tol=0.05).dimension) == 1
    assert int(dyn.slow_manifold(points, tol=0.01).dimension) == 0
