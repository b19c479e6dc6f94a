"""``dynamics.flossing_penalty`` (gradient flossing, Engelken 2023): its value, its gradient, and its effect."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax as rx
from recurrax import dynamics as dyn

N = 16


def _elman(gain, seed=0, dtype=jnp.float32):
    k_i, k_h = jax.random.split(jax.random.key(seed))
    cell = rx.elman(N, use_bias=False, param_dtype=dtype)
    params = {"w_i": 0.1 * jax.random.normal(k_i, (1, N), dtype), "w_h": gain * jax.random.normal(k_h, (N, N), dtype)}
    params["w_h"] = params["w_h"] / np.sqrt(N)
    return cell, params


def test_the_penalty_is_the_squared_distance_of_the_top_exponents_from_the_target():
    cell, params = _elman(4.0)
    xs = 0.1 * jax.random.normal(jax.random.key(1), (150, 1))
    spectrum = dyn.lyapunov_spectrum(cell, params, xs, k=3, burn_in=30)
    got = dyn.flossing_penalty(cell, params, xs, k=3, target=-0.1, burn_in=30)
    np.testing.assert_allclose(got, np.sum((np.asarray(spectrum.exponents) + 0.1) ** 2), rtol=1e-5)
    diverged = {"w_i": params["w_i"], "w_h": jnp.full((N, N), jnp.inf)}
    assert np.isnan(dyn.flossing_penalty(cell, diverged, xs))


def test_the_gradient_follows_the_jacobians_along_a_fixed_trajectory_and_stays_bounded():
    """Through the chaotic states themselves the gradient of a top exponent explodes (about 5e8 here); along the
    fixed trajectory, as flossing takes it, it stays of order ten. It is not the derivative of the rough function
    the exponent is of the params, so only its size is checked here; its use is checked by the test below."""
    with jax.enable_x64(True):
        cell, params = _elman(4.0, dtype=jnp.float64)
        xs = 0.1 * jax.random.normal(jax.random.key(3), (200, 1), jnp.float64)
        state = rx.RNNState(0.5 * jax.random.normal(jax.random.key(5), (N,), jnp.float64))
        assert float(dyn.lyapunov_spectrum(cell, params, xs, state, k=1, burn_in=50).exponents[0]) > 0  # chaotic
        flossing = jax.grad(lambda p: dyn.flossing_penalty(cell, p, xs, state, burn_in=50))(params)
        through_states = jax.grad(
            lambda p: jnp.sum(dyn.lyapunov_spectrum(cell, p, xs, state, k=1, burn_in=50).exponents ** 2)
        )(params)
        norm = lambda g: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g))))  # noqa: E731
        assert np.isfinite(norm(flossing)) and 1e3 * norm(flossing) < norm(through_states)


def test_flossing_pushes_the_top_exponent_towards_zero():
    cell, params = _elman(4.0)
    xs = 0.1 * jax.random.normal(jax.random.key(3), (8, 120, 1))
    states = rx.RNNState(0.5 * jax.random.normal(jax.random.key(5), (8, N)))

    def top(p):  # the mean top exponent over the batch of runs
        spectra = jax.vmap(lambda x, s: dyn.lyapunov_spectrum(cell, p, x, s, k=1, burn_in=20))(xs, states)
        return float(jnp.mean(spectra.exponents[:, 0]))

    loss = jax.jit(
        jax.grad(
            lambda p: jnp.mean(jax.vmap(lambda x, s: dyn.flossing_penalty(cell, p, x, s, k=2, burn_in=20))(xs, states))
        )
    )
    tx = optax.adam(3e-3)
    opt_state, start, late = tx.init(params), top(params), []
    for i in range(40):
        updates, opt_state = tx.update(loss(params), opt_state)
        params = optax.apply_updates(params, updates)
        if i >= 24 and i % 5 == 4:
            late.append(abs(top(params)))
    assert abs(start) > 0.08
    assert np.mean(late) < 0.5 * abs(start)  # the finite-time exponent is rough: judged over the last checkpoints
