"""Lyapunov spectra against known results: log|eig(W)| of a linear map, and the transition to chaos near g = 1."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn


def linear_map(W: np.ndarray):
    """``h' = W h`` as an Elman cell: identity activation, no bias, ``w_h = W^T`` (``h' = h @ w_h``)."""
    N = W.shape[0]
    cell = rx.elman(N, activation=lambda a: a, use_bias=False)
    params = {"w_i": jnp.zeros((1, N)), "w_h": jnp.asarray(W.T, jnp.float32)}
    return cell, params


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_map_exponents_are_log_abs_eigenvalues(seed):
    N = 6
    W = np.random.default_rng(seed).normal(size=(N, N)) / np.sqrt(N)
    cell, params = linear_map(W)
    spectrum = dyn.lyapunov_spectrum(cell, params, jnp.zeros((3000, 1)), burn_in=500)
    want = np.sort(np.log(np.abs(np.linalg.eigvals(W))))[::-1]
    np.testing.assert_allclose(spectrum.exponents, want, atol=1e-3)
    assert bool(spectrum.finite) and int(spectrum.first_nonfinite) == -1
    assert spectrum.finite_time.shape == (2500, N)


def random_tanh(g: float, N: int = 200, seed: int = 0):
    """``h' = tanh(g W h)``, ``W_ij ~ N(0, 1/N)`` (Sompolinsky et al., 1988, in discrete time)."""
    W = np.random.default_rng(seed).normal(size=(N, N)) / np.sqrt(N)
    cell = rx.elman(N, use_bias=False)
    return cell, {"w_i": jnp.zeros((1, N)), "w_h": jnp.asarray(g * W.T, jnp.float32)}


@pytest.mark.parametrize(("g", "sign"), [(0.5, -1), (2.0, 1)])
def test_random_tanh_network_turns_chaotic_above_g_1(g, sign):
    cell, params = random_tanh(g)
    h0 = jnp.asarray(np.random.default_rng(1).normal(size=200), jnp.float32)
    spectrum = dyn.lyapunov_spectrum(cell, params, jnp.zeros((300, 1)), rx.RNNState(h0), k=2, burn_in=100)
    assert np.sign(spectrum.exponents[0]) == sign, spectrum.exponents
    assert abs(float(spectrum.exponents[0])) > 0.05  # clearly on one side, not marginal


def test_vmap_equals_loop_and_jit_equals_eager():
    Ws = np.random.default_rng(3).normal(size=(3, 4, 4)) / 2.0
    xs = jnp.zeros((50, 1))
    params = jax.vmap(lambda W: linear_map(W)[1])(jnp.asarray(Ws))
    cell = linear_map(Ws[0])[0]

    def run(p):
        return dyn.lyapunov_spectrum(cell, p, xs, k=3, burn_in=10, key=jax.random.key(0))

    batched = jax.vmap(run)(params)
    for b in range(3):
        chex.assert_trees_all_close(jax.tree.map(lambda a, b=b: a[b], batched), run(linear_map(Ws[b])[1]), atol=1e-5)
    chex.assert_trees_all_close(jax.jit(run)(linear_map(Ws[0])[1]), run(linear_map(Ws[0])[1]), atol=1e-5)


def test_driven_lstm_spectrum_is_finite_and_sorted():
    cell = rx.lstm(4)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (100, 2))
    spectrum = dyn.lyapunov_spectrum(cell, params, xs, burn_in=20)
    assert spectrum.exponents.shape == (8,)
    assert np.all(np.diff(np.asarray(spectrum.exponents)) <= 0)
    # Gated, bounded dynamics contract here: every exponent negative.
    assert float(spectrum.exponents[0]) < 0


def test_diverging_run_is_reported_not_averaged():
    cell, params = linear_map(3.0 * np.eye(3))  # grows by 3 per step: float32 overflows after ~80 steps
    state = rx.RNNState(jnp.ones(3))
    xs = jnp.zeros((200, 1))
    with pytest.raises(FloatingPointError, match=r"diverged.*not finite from step"):
        dyn.lyapunov_spectrum(cell, params, xs, state)
    flagged = dyn.lyapunov_spectrum(cell, params, xs, state, on_nonfinite="flag")
    assert not bool(flagged.finite) and 70 < int(flagged.first_nonfinite) < 90
    jitted = jax.jit(lambda p: dyn.lyapunov_spectrum(cell, p, xs, state))(params)  # traced: flag only
    assert not bool(jitted.finite)


def test_bad_input():
    cell, params = linear_map(np.eye(3))
    xs = jnp.zeros((10, 1))
    with pytest.raises(ValueError, match=r"`k`.*\[1, S=3\]"):
        dyn.lyapunov_spectrum(cell, params, xs, k=4)
    with pytest.raises(ValueError, match="burn_in"):
        dyn.lyapunov_spectrum(cell, params, xs, burn_in=10)
    with pytest.raises(ValueError, match=r"`xs`"):
        dyn.lyapunov_spectrum(cell, params, jnp.zeros((10, 2)))
