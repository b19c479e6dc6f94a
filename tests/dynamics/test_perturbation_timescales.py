"""Perturbation response and gate/eigenvalue timescales against closed forms and the NumPy gate equations."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn
from reference import random_inputs, random_params, sigmoid


def test_linear_map_response_is_the_matrix_power():
    W = np.random.default_rng(0).normal(size=(4, 4)) / 2.0
    cell = rx.elman(4, activation=lambda a: a, use_bias=False)
    params = {"w_i": jnp.zeros((1, 4)), "w_h": jnp.asarray(W.T, jnp.float32)}
    delta = np.asarray([0.3, -0.1, 0.2, 0.05])
    response = dyn.perturbation_response(cell, params, jnp.zeros((10, 1)), rx.RNNState(jnp.asarray(delta)), t0=3)
    want = [0.0] * 3 + [np.linalg.norm(np.linalg.matrix_power(W, t - 3) @ delta) for t in range(3, 11)]
    np.testing.assert_allclose(response.total, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(response.distance.h, want, rtol=1e-5, atol=1e-7)


def test_lstm_cell_kick_decays_with_the_forget_gates_when_h_is_ignored():
    # With w_h = 0 the gates follow the input alone, so a kick d to c becomes f_t * ... * f_t0 * d, exactly.
    H, I, T, t0 = 3, 2, 12, 2
    cell = rx.lstm(H)
    params = random_params(cell, 1, I)
    params = {**params, "w_h": jnp.zeros_like(params["w_h"])}
    xs = random_inputs((T, I), 2)
    delta = np.asarray([0.2, -0.3, 0.1])
    state0 = cell.initial_state(params, ())
    response = dyn.perturbation_response(cell, params, xs, dyn.field_perturbation(state0, "c", delta), t0=t0)
    a = np.asarray(xs, np.float64) @ np.asarray(params["w_i"], np.float64) + np.asarray(params["b"], np.float64)
    f = sigmoid(a[:, H : 2 * H])
    kept = [np.zeros(H)] * t0 + [delta]
    for t in range(t0, T):
        kept.append(f[t] * kept[-1])
    np.testing.assert_allclose(response.distance.c, np.linalg.norm(kept, axis=-1), rtol=1e-5, atol=1e-7)
    # gate_timescales reads the same forget gates.
    scales = dyn.gate_timescales(cell, params, xs)
    np.testing.assert_allclose(scales.gate, f, rtol=1e-5)
    np.testing.assert_allclose(scales.tau, -1.0 / np.log(f), rtol=1e-4)
    np.testing.assert_allclose(scales.unit_tau, -1.0 / np.log(f.mean(0)), rtol=1e-4)


@pytest.mark.parametrize("family", ["lstm", "gru", "mgu"])
def test_retention_gate_equals_the_numpy_gate_equations(family):
    H, I = 4, 3
    cell = {"lstm": rx.lstm, "gru": rx.gru, "mgu": rx.mgu}[family](H)
    params = random_params(cell, 3, I)
    x = np.asarray(random_inputs((I,), 4), np.float64)
    h = np.asarray(random_inputs((H,), 5), np.float64)
    state = (
        rx.LSTMState(jnp.asarray(h, jnp.float32), jnp.zeros(H))
        if family == "lstm"
        else rx.RNNState(jnp.asarray(h, jnp.float32))
    )
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    a = x @ p["w_i"] + p["b"]
    w = p["w_h"]
    # LSTM c' = f c + i g keeps f; GRU h' = (1 - u) n + u h keeps u; MGU h' = (1 - f) h + f n keeps 1 - f.
    second_block = sigmoid(a[H : 2 * H] + h @ w[:, H : 2 * H])
    want = second_block if family in ("lstm", "gru") else 1.0 - sigmoid(a[:H] + h @ w[:, :H])
    np.testing.assert_allclose(dyn.retention_gate(cell, params, state, jnp.asarray(x, jnp.float32)), want, rtol=1e-5)


def test_jacobian_timescales_are_minus_one_over_log_abs_eigenvalues():
    m = np.random.default_rng(6).normal(size=(5, 5)) / 4.0
    moduli = np.sort(np.abs(np.linalg.eigvals(m)))[::-1]
    np.testing.assert_allclose(dyn.jacobian_timescales(jnp.asarray(m)), -1.0 / np.log(moduli), rtol=1e-4)
    assert np.isinf(dyn.jacobian_timescales(jnp.eye(2) * 1.5)).all()


def test_vmap_over_kick_times_equals_loop_and_jit_equals_eager():
    cell = rx.lstm(3)
    params = cell.init(jax.random.key(0), 2)
    xs = random_inputs((9, 2), 7)
    kick = dyn.field_perturbation(cell.initial_state(params, ()), "h", 0.1)

    def run(t0):
        return dyn.perturbation_response(cell, params, xs, kick, t0=t0)

    batched = jax.vmap(run)(jnp.arange(4))
    for t0 in range(4):
        chex.assert_trees_all_close(jax.tree.map(lambda a, t0=t0: a[t0], batched), run(t0), atol=1e-6)
        assert float(batched.total[t0, t0]) == pytest.approx(0.1 * np.sqrt(3), rel=1e-6)
        assert np.all(np.asarray(batched.total[t0, :t0]) == 0.0)
    chex.assert_trees_all_close(jax.jit(run)(2), run(2), atol=1e-6)


def test_gate_timescales_vmap_over_params_equals_loop_and_jit_equals_eager():
    cell = rx.gru(3)
    params = [random_params(cell, seed, 2) for seed in (10, 11)]
    xs = random_inputs((6, 2), 12)
    batched = jax.vmap(lambda p: dyn.gate_timescales(cell, p, xs))(jax.tree.map(lambda *a: jnp.stack(a), *params))
    for b, p in enumerate(params):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, b=b: a[b], batched), dyn.gate_timescales(cell, p, xs), rtol=1e-5
        )
    jitted = jax.jit(lambda p: dyn.gate_timescales(cell, p, xs))(params[0])
    chex.assert_trees_all_close(jitted, dyn.gate_timescales(cell, params[0], xs), rtol=1e-5)


def test_bad_input():
    cell = rx.lstm(3)
    params = cell.init(jax.random.key(0), 2)
    state0 = cell.initial_state(params, ())
    xs = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="t0"):
        dyn.perturbation_response(cell, params, xs, state0, t0=6)
    with pytest.raises(ValueError, match="shaped like the state"):
        dyn.perturbation_response(cell, params, xs, rx.LSTMState(jnp.zeros(2), jnp.zeros(3)))
    with pytest.raises(ValueError, match="field"):
        dyn.field_perturbation(state0, "x", 1.0)
    with pytest.raises(ValueError, match="defined for"):
        dyn.gate_timescales(rx.elman(3), rx.elman(3).init(jax.random.key(0), 2), xs)
    with pytest.raises(ValueError, match="plain"):
        peep = rx.lstm(3, peephole=True)
        dyn.gate_timescales(peep, peep.init(jax.random.key(0), 2), xs)
