"""minGRU, minLSTM (Feng et al., 2024) and the LRU (Orvieto et al., 2023) against their equations in NumPy.

References are the papers' sequential equations written out in float64 NumPy; the parallel backends
are checked against the sequential path in ``test_linear_scan.py``.
"""

import math

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax.cells.linear import LRUState, lru, min_gru, min_lstm
from recurrax.core import LinearRecurrence

B, I, H, N = 3, 5, 4, 6


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _g(x):
    return np.where(x >= 0, x + 0.5, _sigmoid(x))


def np_min_gru(p, h, x):
    k = x @ np.asarray(p["w_i"], np.float64) + np.asarray(p["b"], np.float64)
    kz, kh = k[..., :H], k[..., H:]
    u = _sigmoid(kz)
    return (1 - u) * h + u * _g(kh)


def np_min_lstm(p, h, x):
    k = x @ np.asarray(p["w_i"], np.float64) + np.asarray(p["b"], np.float64)
    f, i, kh = _sigmoid(k[..., :H]), _sigmoid(k[..., H : 2 * H]), k[..., 2 * H :]
    return f / (f + i) * h + i / (f + i) * _g(kh)


def np_lru(p, x_state, u):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    B_mat = (p["b_re"] + 1j * p["b_im"]).T  # (N, I), the paper's B
    C_mat = (p["c_re"] + 1j * p["c_im"]).T  # (H, N)
    gamma = np.exp(p["gamma_log"])
    x_new = lam * x_state + gamma * (u @ B_mat.T)
    D = p["d"]
    du = u * D if D.ndim == 1 else u @ D
    y = (x_new @ C_mat.T).real + du
    return x_new, y


def _scan(cell, backend):
    """``rx.scan`` under jit: ``(params, xs, state) -> (final, outputs)``."""
    return jax.jit(lambda params, xs, state: rx.scan(cell, params, xs, state, backend=backend))


def _inputs(key, shape):
    return jax.random.normal(key, shape, jnp.float32)


@pytest.mark.parametrize(
    "factory, reference, log_space, backends",
    [
        (min_gru, np_min_gru, True, ("sequential", "associative", "chunked")),
        (min_gru, np_min_gru, False, ("associative",)),
        (min_lstm, np_min_lstm, True, ("sequential", "chunked")),
        (min_lstm, np_min_lstm, False, ("associative",)),
    ],
)
def test_min_rnn_sequence_matches_numpy(factory, reference, log_space, backends):
    cell = factory(H, log_space=log_space)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = cell.init(k1, I)
    xs = 3.0 * _inputs(k2, (B, 20, I))  # wide enough to cover both branches of g
    h0 = _inputs(k3, (B, H))  # any sign: the scans add the initial state linearly
    h = np.asarray(h0, np.float64)
    want = []
    for t in range(xs.shape[1]):
        h = reference(params, h, np.asarray(xs[:, t], np.float64))
        want.append(h)
    want = np.stack(want, 1)
    step = cell.step(params, rx.RNNState(h0), xs[:, 0])
    chex.assert_trees_all_close(step.h, want[:, 0], rtol=1e-5, atol=1e-6)
    for backend in backends:
        final, ys = _scan(cell, backend)(params, xs, rx.RNNState(h0))
        chex.assert_trees_all_close(ys, want, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(final.h, want[:, -1], rtol=1e-5, atol=1e-5)


def test_min_rnn_params_layout():
    x = jnp.ones((2, I))
    p = min_gru(H).init(jax.random.PRNGKey(0), I)
    assert {k: v.shape for k, v in p.items()} == {"w_i": (I, 2 * H), "b": (2 * H,)}
    p = min_lstm(H, use_bias=False).init(jax.random.PRNGKey(0), I)
    assert {k: v.shape for k, v in p.items()} == {"w_i": (I, 3 * H)}
    assert min_lstm(H, use_bias=False).step(p, rx.RNNState(jnp.zeros((2, H))), x).h.shape == (2, H)


def test_min_gru_log_space_survives_saturated_gates():
    # Unit 0: k_z = -60, u = 9e-27, the state holds h0 = 0.25 (log a ~ -9e-27, log b ~ -60).
    # Unit 1: k_z = +60, a = 9e-27, the state is h̃ = g(1) = 1.5 at every step (log a ~ -60, summed to -3e5).
    cell = min_gru(2)
    params = {"w_i": jnp.array([[-60.0, 60.0, 1.0, 1.0]]), "b": jnp.zeros(4)}
    xs = jnp.ones((1, 5000, 1))
    h0 = rx.RNNState(jnp.full((1, 2), 0.25))
    for backend in ("associative", "chunked"):
        _, ys = _scan(cell, backend)(params, xs, h0)
        np.testing.assert_allclose(ys[0, :, 0], 0.25, rtol=1e-6)
        np.testing.assert_allclose(ys[0, :, 1], 1.5, rtol=1e-6)


def test_min_gru_mixed_precision_keeps_state_dtype():
    cell = min_gru(H, dtype=jnp.bfloat16)
    params = cell.init(jax.random.PRNGKey(0), I)
    _, ys = _scan(cell, "associative")(params, _inputs(jax.random.PRNGKey(1), (B, 7, I)), None)
    assert ys.dtype == jnp.float32


@pytest.mark.parametrize("input_size", [H, I])
def test_lru_sequence_matches_numpy(input_size):
    cell = lru(H, N, r_min=0.4, r_max=0.95, max_phase=math.pi)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    params = cell.init(k1, input_size)
    assert params["d"].shape == ((H,) if input_size == H else (input_size, H))
    us = _inputs(k2, (B, 25, input_size))
    x0 = jax.lax.complex(*jnp.split(_inputs(k3, (B, 2 * N)), 2, axis=-1))
    state0 = LRUState(x=x0, y=jnp.zeros((B, H)))
    x, want = np.asarray(x0, np.complex128), []
    for t in range(us.shape[1]):
        x, y = np_lru(params, x, np.asarray(us[:, t], np.float64))
        want.append(y)
    want = np.stack(want, 1)
    for backend in ("sequential", "associative", "chunked"):
        final, ys = _scan(cell, backend)(params, us, state0)
        chex.assert_trees_all_close(ys, want, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(final.x, x, rtol=1e-5, atol=1e-5)
        assert final.x.dtype == jnp.complex64 and final.y.dtype == jnp.float32


def test_lru_compute_dtype_rounds_the_matmul_operands_only():
    """``lru(dtype=bf16)``: the B, C (and dense D) matmuls on bf16 operands, accumulated in float32; λ and the
    state in float32. Against NumPy with exactly those operands rounded, and farther than that from float32."""
    bf16 = lambda a: np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)  # noqa: E731
    cell = lru(H, N, r_min=0.4, r_max=0.95, dtype=jnp.bfloat16)
    params = cell.init(jax.random.PRNGKey(3), I)
    assert all(v.dtype == jnp.float32 for v in params.values())
    us = _inputs(jax.random.PRNGKey(4), (B, 9, I))
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    x, want = np.zeros((B, N), np.complex128), []
    for t in range(us.shape[1]):
        u = np.asarray(us[:, t], np.float64)
        bu = (bf16(u) @ bf16(p["b_re"])) * gamma + 1j * (bf16(u) @ bf16(p["b_im"])) * gamma
        x = lam * x + bu
        y = bf16(x.real) @ bf16(p["c_re"]) - bf16(x.imag) @ bf16(p["c_im"]) + bf16(u) @ bf16(p["d"])
        want.append(y)
    want = np.stack(want, 1)
    final, ys = _scan(cell, "sequential")(params, us, None)
    assert ys.dtype == jnp.float32 and final.x.dtype == jnp.complex64
    # The state x is float32 (complex64) between steps, rounded where the reference keeps float64.
    chex.assert_trees_all_close(ys, want, rtol=1e-4, atol=1e-4)
    full = _scan(lru(H, N, r_min=0.4, r_max=0.95), "sequential")(params, us, None)[1]
    assert np.abs(np.asarray(full) - want).max() > 1e-3  # the compute dtype is honoured
    for backend in ("associative", "chunked"):
        chex.assert_trees_all_close(_scan(cell, backend)(params, us, None)[1], ys, rtol=1e-5, atol=1e-5)


def test_lru_ring_initialisation_and_gamma():
    r_min, r_max, max_phase = 0.5, 0.9, 0.3
    cell = lru(H, 4000, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p = cell.init(jax.random.PRNGKey(2), I)
    modulus = np.exp(-np.exp(np.asarray(p["nu_log"], np.float64)))
    phase = np.exp(np.asarray(p["theta_log"], np.float64))
    assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # λ uniform on the ring's area: |λ|^2 ~ U(r_min^2, r_max^2) (mean and variance of a uniform, 4000 draws).
    sq = modulus**2
    np.testing.assert_allclose(sq.mean(), (r_min**2 + r_max**2) / 2, atol=0.01)
    np.testing.assert_allclose(sq.var(), (r_max**2 - r_min**2) ** 2 / 12, rtol=0.1)
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p["b_re"]).var(), 1 / (2 * I), rtol=0.1)
    np.testing.assert_allclose(np.asarray(p["c_im"]).var(), 1 / 4000, rtol=0.1)


def test_lru_gamma_normalises_the_state_variance():
    # With white-noise input the stationary E|x_i|^2 = γ_i^2 |B_i|^2 / (1 - |λ_i|^2) = |B_i u|^2's variance.
    cell = lru(2, 3, r_min=0.8, r_max=0.9)
    params = cell.init(jax.random.PRNGKey(3), 1)
    us = jax.random.normal(jax.random.PRNGKey(4), (1024, 60, 1))
    final, _ = _scan(cell, "associative")(params, us, None)
    b = np.abs(np.asarray(params["b_re"][0]) + 1j * np.asarray(params["b_im"][0])) ** 2
    np.testing.assert_allclose(np.mean(np.abs(np.asarray(final.x)) ** 2, axis=0), b, rtol=0.2)


@pytest.mark.parametrize("factory", [lambda: min_gru(H), lambda: min_lstm(H), lambda: lru(H, N, r_min=0.5)])
def test_step_jit_and_vmap(factory):
    cell = factory()
    params = cell.init(jax.random.PRNGKey(0), I)
    state = cell.initial_state(params, (B,))
    x = _inputs(jax.random.PRNGKey(1), (B, I))
    eager = cell.step(params, state, x)
    chex.assert_trees_all_close(jax.jit(cell.step)(params, state, x), eager, rtol=1e-6, atol=1e-6)
    looped = [cell.step(params, jax.tree.map(lambda s, b=b: s[b], state), x[b]) for b in range(B)]
    stacked = jax.tree.map(lambda *s: jnp.stack(s), *looped)
    chex.assert_trees_all_close(jax.vmap(cell.step, (None, 0, 0))(params, state, x), stacked, rtol=1e-6, atol=1e-6)
    assert cell.structure.kind == "linear" and isinstance(cell.structure.recurrence, LinearRecurrence)
    assert cell.output(eager).shape == (B, H)


@pytest.mark.parametrize(
    "factory, backend, modes",
    [
        (lambda dt: min_gru(2, param_dtype=dt), "associative", ("fwd", "rev")),
        (lambda dt: min_lstm(2, param_dtype=dt), "chunked", ("rev",)),
    ],
)
def test_check_grads_float64(factory, backend, modes):
    with jax.enable_x64(True):
        cell = factory(jnp.float64)
        params = cell.init(jax.random.PRNGKey(0), 3)
        xs = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 3), jnp.float64)
        h0 = rx.RNNState(jax.random.normal(jax.random.PRNGKey(2), (2, 2), jnp.float64))

        check_grads(jax.jit(lambda *a: _scan(cell, backend)(*a)[1]), (params, xs, h0), order=1, modes=modes)


def test_check_grads_lru_float64():
    with jax.enable_x64(True):
        cell = lru(2, 3, r_min=0.3, r_max=0.9, param_dtype=jnp.float64)
        params = cell.init(jax.random.PRNGKey(0), 2)
        us = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 2), jnp.float64)

        check_grads(jax.jit(lambda p, u: _scan(cell, "associative")(p, u, None)[1]), (params, us), 1, modes=("rev",))
        step = jax.jit(lambda p, u: cell.step(p, cell.initial_state(p, (2,)), u).y)
        check_grads(step, (params, us[:, 0]), order=1)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: lru(4, 2, r_max=1.2), r"0 <= r_min <= r_max <= 1 .*got r_min=0.0, r_max=1.2"),
        (lambda: lru(4, 2, r_min=0.9, r_max=0.5), r"r_min <= r_max.*r_min=0.9, r_max=0.5"),
        (lambda: lru(4, 2, r_min=1.0, r_max=1.0), r"r_min < 1"),
        (lambda: lru(4, 2, r_min=-0.1), r"0 <= r_min"),
        (lambda: lru(4, 2, max_phase=0.0), r"`max_phase` must lie in \(0, 2π\], got 0.0"),
        (lambda: lru(4, 2, max_phase=7.0), r"`max_phase`"),
        (lambda: lru(4, 0), r"lru: `state_size` must be a positive int, got 0"),
        (lambda: min_gru(0), r"min_gru: `hidden_size` must be a positive int, got 0"),
        (lambda: min_lstm(-3), r"min_lstm: `hidden_size`"),
    ],
)
def test_bad_hyper_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs():
    with pytest.raises(TypeError, match="min_gru: `log_space` must be a bool"):
        min_gru(4, log_space="yes")
    cell = min_lstm(H)
    params = cell.init(jax.random.PRNGKey(0), I)
    with pytest.raises(ValueError, match=r"min_lstm: `x` must have shape \(..., 5\).*got shape \(2, 3\)"):
        cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"min_lstm: `state.h` must have shape \(2, 4\)"):
        cell.step(params, rx.RNNState(jnp.zeros((2, 7))), jnp.ones((2, I)))
    cell = lru(H, N)
    params = cell.init(jax.random.PRNGKey(0), I)
    with pytest.raises(ValueError, match=r"lru: `state.x` must have shape \(2, 6\)"):
        cell.step(params, LRUState(jnp.zeros((2, 5), jnp.complex64), jnp.zeros((2, H))), jnp.ones((2, I)))
    with pytest.raises(ValueError, match="lru: `input_size` must be a positive int"):
        cell.init(jax.random.PRNGKey(0), 0)
