"""Spectrum summaries against their definitions written out in plain NumPy, on hand-picked and computed spectra."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn


def numpy_kaplan_yorke(exponents):
    """Kaplan & Yorke (1979), by a loop over the sorted exponents."""
    lam = sorted((float(e) for e in exponents), reverse=True)
    total, k = 0.0, 0
    for j, e in enumerate(lam):
        if total + e < 0:
            break
        total, k = total + e, j + 1
    if k == 0:
        return 0.0
    if k == len(lam):
        return float(len(lam))
    return k + total / abs(lam[k])


def numpy_ks(exponents):
    return sum(float(e) for e in exponents if e > 0)


def numpy_participation(v):
    v = np.asarray(v, np.float64)
    return np.sum(v**2) ** 2 / np.sum(v**4)


HAND_PICKED = [
    ([0.906, 0.0, -14.572], 2 + 0.906 / 14.572),  # the Lorenz attractor's spectrum: D ~ 2.06
    ([-0.1, -0.5], 0.0),  # contracting: a fixed point
    ([0.3, 0.1], 2.0),  # every partial sum non-negative: n
    ([0.5, -0.5, -1.0], 2.0),  # a partial sum exactly 0 counts as non-negative
    ([-1.0, 0.5, -0.5], 2.0),  # order does not matter
    ([0.2, -math.inf, -math.inf], 1.0),  # directions mapped to zero (a read-out) add nothing
    ([0.1, -0.4, -0.2], 1.5),
]


@pytest.mark.parametrize(("exponents", "want"), HAND_PICKED)
def test_kaplan_yorke_dimension_of_hand_picked_spectra(exponents, want):
    assert numpy_kaplan_yorke(exponents) == pytest.approx(want)
    assert float(dyn.kaplan_yorke_dimension(jnp.asarray(exponents))) == pytest.approx(want, rel=1e-6)
    assert float(dyn.ks_entropy(jnp.asarray(exponents))) == pytest.approx(numpy_ks(exponents), rel=1e-6)


def test_nan_exponents_give_nan():
    assert np.isnan(dyn.kaplan_yorke_dimension(jnp.asarray([0.1, np.nan, -1.0])))
    assert np.isnan(dyn.ks_entropy(jnp.asarray([0.1, np.nan])))


@pytest.fixture(scope="module")
def chaotic_spectrum():
    """A small random tanh network well above the transition to chaos (g = 4), its full spectrum.

    Small networks above g = 1 often settle on a cycle instead; this seed is chaotic (lambda_1 ~ 0.23, D ~ 3.1).
    """
    N = 16
    W = np.random.default_rng(0).normal(size=(N, N)) / np.sqrt(N)
    cell = rx.elman(N, use_bias=False)
    params = {"w_i": jnp.zeros((1, N)), "w_h": jnp.asarray(4.0 * W.T, jnp.float32)}
    h0 = jnp.asarray(np.random.default_rng(1).normal(size=N), jnp.float32)
    return dyn.lyapunov_spectrum(cell, params, jnp.zeros((400, 1)), rx.RNNState(h0), burn_in=100)


def test_summaries_of_a_chaotic_elman_spectrum_equal_the_numpy_definitions(chaotic_spectrum):
    exponents = np.asarray(chaotic_spectrum.exponents)
    assert exponents[0] > 0.05  # chaotic, so the dimension is not an edge case
    dim = float(dyn.kaplan_yorke_dimension(chaotic_spectrum.exponents))
    assert 1.0 < dim < exponents.size
    assert dim == pytest.approx(numpy_kaplan_yorke(exponents), rel=1e-5)
    assert float(dyn.ks_entropy(chaotic_spectrum.exponents)) == pytest.approx(numpy_ks(exponents), rel=1e-5)
    ratios = dyn.participation_ratio(chaotic_spectrum.vectors)
    want = [numpy_participation(chaotic_spectrum.vectors[:, i]) for i in range(exponents.size)]
    np.testing.assert_allclose(ratios, want, rtol=1e-5)
    assert np.all((np.asarray(ratios) >= 1 - 1e-5) & (np.asarray(ratios) <= exponents.size + 1e-5))


def test_jit_and_vmap_equal_a_loop():
    spectra = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5)) * 0.5)
    vectors = jnp.asarray(np.random.default_rng(3).normal(size=(6, 4, 3)))
    for fn, data in [
        (dyn.kaplan_yorke_dimension, spectra),
        (dyn.ks_entropy, spectra),
        (dyn.participation_ratio, vectors),
    ]:
        batched = jax.vmap(fn)(data)
        chex.assert_trees_all_close(jax.jit(fn)(data), batched, rtol=1e-6)  # leading axes work directly too
        for b in range(data.shape[0]):
            chex.assert_trees_all_close(batched[b], jax.jit(fn)(data[b]), rtol=1e-6)
    want = [numpy_kaplan_yorke(s) for s in np.asarray(spectra)]
    np.testing.assert_allclose(jax.vmap(dyn.kaplan_yorke_dimension)(spectra), want, rtol=1e-5)


def test_participation_ratio_edge_cases():
    S = 5
    vectors = np.zeros((S, 4))
    vectors[2, 0] = -3.0  # one coordinate
    vectors[:, 1] = 0.7  # all of them, evenly
    vectors[:2, 2] = [1.0, -1.0]  # two
    np.testing.assert_allclose(dyn.participation_ratio(jnp.asarray(vectors)), [1.0, S, 2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        dyn.participation_ratio(jnp.asarray(vectors), normalize=True), [1 / S, 1.0, 2 / S, 0.0], rtol=1e-6
    )
    assert float(dyn.participation_ratio(jnp.full((S, 1), 1e-30))[0]) == pytest.approx(S, rel=1e-5)  # no underflow
    with pytest.raises(ValueError, match=r"\(\.\.\., S, k\)"):
        dyn.participation_ratio(jnp.ones(3))


def test_leading_lyapunov_vector_of_a_symmetric_linear_map_is_its_leading_eigenvector():
    N = 5
    A = np.random.default_rng(4).normal(size=(N, N))
    W = (A + A.T) / (2 * np.sqrt(N))
    cell = rx.elman(N, activation=lambda a: a, use_bias=False)
    params = {"w_i": jnp.zeros((1, N)), "w_h": jnp.asarray(W.T, jnp.float32)}
    spectrum = dyn.lyapunov_spectrum(cell, params, jnp.zeros((200, 1)), k=2, key=jax.random.key(0))
    eigenvalues, eigenvectors = np.linalg.eigh(W)
    leading = eigenvectors[:, np.argmax(np.abs(eigenvalues))]
    assert abs(float(np.dot(spectrum.vectors[:, 0], leading))) > 0.999
    np.testing.assert_allclose(spectrum.vectors.T @ spectrum.vectors, np.eye(2), atol=1e-5)
