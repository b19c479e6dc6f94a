"""Every dynamics analysis on the LRU (complex state ``x``), in the real view, against a NumPy LRU and known results.

The LRU's recurrence ``x' = lambda x + gamma (u B)`` is linear and diagonal, and ``y' = Re(x' C) + u D`` is a
read-out: in the real view (``[Re x_0, Im x_0, ...]``) its step Jacobian is the constant
``J = [[Lambda, 0], [C^T Lambda, 0]]`` with ``Lambda`` the 2x2 blocks ``[[Re l, -Im l], [Im l, Re l]]``, so
products are matrix powers, exponents are ``log |lambda_i|`` (twice each) and timescales ``-1 / log |lambda_i|``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dynamics_reference import numeric_jacobian

import recurrax as rx
from recurrax import dynamics as dyn

H, N, I, T = 2, 3, 2, 12


@pytest.fixture(scope="module")
def lru():
    cell = rx.lru(H, N, r_min=0.4, r_max=0.95)
    params = cell.init(jax.random.key(0), I)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    return cell, params, p, lam


def numpy_step(p, lam, v, u):
    """The LRU step in NumPy on the interleaved real view ``[Re x_0, Im x_0, ..., y]``."""
    x = v[: 2 * N : 2] + 1j * v[1 : 2 * N : 2]
    x = lam * x + np.exp(p["gamma_log"]) * (u @ (p["b_re"] + 1j * p["b_im"]))
    y = (x @ (p["c_re"] + 1j * p["c_im"])).real + (u * p["d"] if p["d"].ndim == 1 else u @ p["d"])
    return np.concatenate([np.stack([x.real, x.imag], -1).ravel(), y])


def numpy_jacobian(p, lam):
    """``J`` by finite differences of :func:`numpy_step` (it is constant: the LRU is linear)."""
    return numeric_jacobian(lambda v: numpy_step(p, lam, v, np.zeros(I)), np.zeros(2 * N + H))


def random_state(key):
    kx, ky = jax.random.split(key)
    x = jax.lax.complex(*jax.random.normal(kx, (2, N)))
    return rx.LRUState(x=x, y=jax.random.normal(ky, (H,)))


def test_flatten_is_the_interleaved_real_view_and_unflatten_inverts_it():
    state = rx.LRUState(x=jnp.asarray([1 + 2j, 3 - 4j], jnp.complex64), y=jnp.asarray([5.0]))
    np.testing.assert_array_equal(dyn.flatten(state), [1, 2, 3, -4, 5])
    back = dyn.unflatten(state, dyn.flatten(state))
    assert back.x.dtype == jnp.complex64
    chex.assert_trees_all_equal(back, state)
    batched = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), state)  # leading axes pass through
    np.testing.assert_array_equal(dyn.flatten(batched)[1], [2, 4, 6, -8, 10])


def test_lru_step_jacobian_is_the_real_2x2_rotation_blocks(lru):
    cell, params, p, lam = lru
    state, x = random_state(jax.random.key(1)), jnp.asarray([0.3, -0.7])
    jac = dyn.step_jacobian(cell, params, state, x)
    blocks = np.zeros((2 * N, 2 * N))
    for i, l in enumerate(lam):
        blocks[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[l.real, -l.imag], [l.imag, l.real]]
    np.testing.assert_allclose(jac.blocks.x.x, blocks, atol=1e-6)
    np.testing.assert_allclose(jac.matrix, numpy_jacobian(p, lam), atol=1e-5)
    assert np.all(np.asarray(jac.blocks.x.y) == 0) and np.all(np.asarray(jac.blocks.y.y) == 0)
    want_u = numeric_jacobian(lambda u: numpy_step(p, lam, np.asarray(dyn.flatten(state), np.float64), u), x)
    np.testing.assert_allclose(dyn.input_jacobian(cell, params, state, x).matrix, want_u, atol=1e-5)


def test_lru_lyapunov_spectrum_is_log_abs_lambda_twice(lru):
    # The y read-out is mapped to zero each step (y' does not depend on y), so its H exponents are log(~0):
    # -inf or round-off sized, far below every log|lambda|. The top 2N are the recurrence's, each twice.
    cell, params, _, lam = lru
    xs = jax.random.normal(jax.random.key(2), (1500, I))  # a linear map's exponents do not depend on the input
    spectrum = dyn.lyapunov_spectrum(cell, params, xs, burn_in=100)
    want = np.repeat(np.sort(np.log(np.abs(lam)))[::-1], 2)
    np.testing.assert_allclose(spectrum.exponents[: 2 * N], want, atol=2e-3)
    assert np.all(np.asarray(spectrum.exponents[2 * N :]) < want.min() - 5)
    assert spectrum.vectors.shape == (2 * N + H, 2 * N + H)
    np.testing.assert_allclose(spectrum.vectors.T @ spectrum.vectors, np.eye(2 * N + H), atol=1e-5)
    top = dyn.lyapunov_spectrum(cell, params, xs, k=2 * N, burn_in=100)
    np.testing.assert_allclose(top.exponents, want, atol=2e-3)


def test_every_analysis_runs_on_the_lru_under_jit_and_matches_the_numpy_jacobian(lru):
    cell, params, p, lam = lru
    xs = jax.random.normal(jax.random.key(3), (T, I))
    state = random_state(jax.random.key(4))
    kick = dyn.field_perturbation(state, "x", jnp.asarray([0.1 + 0.2j, -0.3j, 0.05]))
    u = jax.random.normal(jax.random.key(5), (2 * N + H,))

    @jax.jit
    def run(params, xs, state):
        z = jnp.zeros(I)
        return {
            "jacs": dyn.step_jacobians(cell, params, xs, state),
            "input_jacs": dyn.input_jacobians(cell, params, xs, state),
            "flow": dyn.gradient_flow(cell, params, xs, lambda s: jnp.dot(dyn.flatten(s), u), state),
            "explicit": dyn.jacobian_product_norms(cell, params, xs, state, method="explicit"),
            "power": dyn.jacobian_product_norms(cell, params, xs, state, method="power", num_iters=100),
            "response": dyn.perturbation_response(cell, params, xs, kick, t0=2, state=state),
            "spectrum": dyn.lyapunov_spectrum(cell, params, xs, state, k=4),
            "parallel": dyn.parallelizability(cell, params, xs, state),
            "minimized": dyn.minimize_speed(cell, params, z, jax.tree.map(lambda a: a[None], state), num_steps=300),
            "linear": dyn.linearize(cell, params, state, z),
            "speed": dyn.speed(cell, params, state, z),
            "gates": dyn.gate_timescales(cell, params, xs, state),
        }

    out = run(params, xs, state)
    chex.assert_tree_all_finite(jax.tree.map(lambda a: jnp.where(jnp.isinf(a), 0.0, a), out))
    S = 2 * N + H
    chex.assert_shape(out["jacs"].matrix, (T, S, S))
    chex.assert_shape(out["input_jacs"].blocks.x, (T, 2 * N, I))
    assert out["flow"].grads.x.dtype == jnp.complex64 and out["flow"].grads.x.shape == (T + 1, N)

    J = numpy_jacobian(p, lam)
    powers = [np.linalg.matrix_power(J, T - t) for t in range(T + 1)]  # d s_T / d s_t
    np.testing.assert_allclose(out["jacs"].matrix, np.broadcast_to(J, (T, S, S)), atol=1e-5)
    flat_grads = np.stack([m.T @ np.asarray(u, np.float64) for m in powers])
    np.testing.assert_allclose(dyn.flatten(out["flow"].grads), flat_grads, atol=1e-4)
    spectral = np.linalg.norm(np.stack(powers), ord=2, axis=(-2, -1))
    np.testing.assert_allclose(out["explicit"].total, spectral, rtol=1e-4)
    np.testing.assert_allclose(out["power"].total, spectral, rtol=1e-4)
    np.testing.assert_allclose(
        out["explicit"].blocks.x.x,
        np.linalg.norm(np.stack(powers)[:, : 2 * N, : 2 * N], ord=2, axis=(-2, -1)),
        rtol=1e-4,
    )
    assert float(out["power"].residual.max()) < 1e-3
    delta = np.asarray(dyn.flatten(kick), np.float64)
    want = [0.0] * 2 + [np.linalg.norm(np.linalg.matrix_power(J, t - 2) @ delta) for t in range(2, T + 1)]
    np.testing.assert_allclose(out["response"].total, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["response"].distance.x[2], np.linalg.norm(delta), rtol=1e-6)

    assert bool(out["parallel"].predictable)
    np.testing.assert_allclose(out["parallel"].lambda_max, out["spectrum"].exponents[0], atol=1e-6)
    # With zero input the only fixed point is the origin, linearised by J: eigenvalues lambda, conj(lambda), 0.
    ends, q = out["minimized"]
    np.testing.assert_allclose(dyn.flatten(ends)[0], 0.0, atol=1e-4)
    assert float(q[0]) < 1e-9
    moduli = np.sort(np.abs(np.asarray(out["linear"].eigenvalues)))[::-1]
    np.testing.assert_allclose(
        moduli, np.concatenate([np.repeat(np.sort(np.abs(lam))[::-1], 2), np.zeros(H)]), atol=1e-5
    )
    tau = -1.0 / np.log(np.abs(lam))
    np.testing.assert_allclose(out["gates"].unit_tau, tau, rtol=1e-5)
    np.testing.assert_allclose(dyn.jacobian_timescales(J)[: 2 * N], np.repeat(np.sort(tau)[::-1], 2), rtol=1e-4)


def test_complex_gradient_is_the_steepest_ascent_direction(lru):
    # L = sum |x_T|^2 has dL/dRe x + i dL/dIm x = 2 x_T (jax.grad alone would give the conjugate).
    cell, params, _, _ = lru
    xs = jax.random.normal(jax.random.key(6), (5, I))
    flow = dyn.gradient_flow(cell, params, xs, lambda s: jnp.sum(jnp.abs(s.x) ** 2))
    np.testing.assert_allclose(flow.grads.x[-1], 2 * dyn.trajectory(cell, params, xs).x[-1], rtol=1e-5)
    np.testing.assert_allclose(flow.norms.x, np.linalg.norm(dyn.flatten(flow.grads)[:, : 2 * N], axis=-1), rtol=1e-5)


def test_vmap_over_lru_states_equals_loop(lru):
    cell, params, _, _ = lru
    states = jax.vmap(random_state)(jax.random.split(jax.random.key(7), 3))
    x = jnp.asarray([0.2, 0.1])
    batched = jax.vmap(lambda s: dyn.step_jacobian(cell, params, s, x))(states)
    for b in range(3):
        one = dyn.step_jacobian(cell, params, jax.tree.map(lambda a, b=b: a[b], states), x)
        chex.assert_trees_all_close(jax.tree.map(lambda a, b=b: a[b], batched), one, atol=1e-6)


def test_perturbations_of_complex_fields(lru):
    cell, params, _, _ = lru
    xs = jnp.zeros((4, I))
    real_kick = rx.LRUState(x=jnp.full(N, 0.1), y=jnp.zeros(H))  # along the real axis of each unit
    np.testing.assert_allclose(dyn.perturbation_response(cell, params, xs, real_kick).total[0], 0.1 * np.sqrt(N))
    elman = rx.elman(2)
    with pytest.raises(TypeError, match="complex"):
        dyn.perturbation_response(
            elman, elman.init(jax.random.key(0), 1), jnp.zeros((3, 1)), rx.RNNState(jnp.ones(2, jnp.complex64))
        )
