"""Step and input Jacobians against finite differences of the NumPy cell equations, ``jax.jacfwd``, and diag(f)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dynamics_reference import numeric_jacobian

import recurrax as rx
from recurrax import dynamics as dyn
from reference import lstm as np_lstm
from reference import random_inputs, random_params, sigmoid, to_numpy


def lstm_case(H=3, P=None, I=2, seed=0):
    cell = rx.lstm(H, proj_size=P)
    params = random_params(cell, seed, I)
    x = random_inputs((I,), seed + 1)
    state = rx.LSTMState(h=random_inputs((P or H,), seed + 2), c=random_inputs((H,), seed + 3))
    return cell, params, state, x


@pytest.mark.parametrize("proj", [None, 2])
def test_lstm_step_jacobian_matches_finite_differences(proj):
    cell, params, state, x = lstm_case(P=proj)
    p, (h, c), xn = to_numpy(params), to_numpy(state), np.asarray(x, np.float64)
    P = h.size

    def flat_step(v):
        return np.concatenate(np_lstm(p, (v[:P], v[P:]), xn))

    want = numeric_jacobian(flat_step, np.concatenate([h, c]))
    jac = dyn.step_jacobian(cell, params, state, x)
    np.testing.assert_allclose(jac.matrix, want, atol=1e-5)
    # The blocks are the named quarters of the matrix: rows are the output field, columns the input one.
    np.testing.assert_allclose(jac.blocks.h.h, want[:P, :P], atol=1e-5)
    np.testing.assert_allclose(jac.blocks.h.c, want[:P, P:], atol=1e-5)
    np.testing.assert_allclose(jac.blocks.c.h, want[P:, :P], atol=1e-5)
    np.testing.assert_allclose(jac.blocks.c.c, want[P:, P:], atol=1e-5)

    input_jac = dyn.input_jacobian(cell, params, state, x)
    want_x = numeric_jacobian(lambda v: np.concatenate(np_lstm(p, (h, c), v)), xn)
    np.testing.assert_allclose(input_jac.matrix, want_x, atol=1e-5)
    np.testing.assert_allclose(input_jac.blocks.c, want_x[P:], atol=1e-5)


def test_step_jacobians_equal_jacfwd_of_the_flat_step_along_the_trajectory():
    cell = rx.gru(4)
    params = random_params(cell, 3, 2)
    xs = random_inputs((6, 2), 4)
    jacs = dyn.step_jacobians(cell, params, xs)
    chex.assert_shape(jacs.matrix, (6, 4, 4))
    h = jnp.zeros(4)
    for t in range(6):
        want = jax.jacfwd(lambda v, x=xs[t]: cell.step(params, rx.RNNState(v), x).h)(h)
        np.testing.assert_allclose(jacs.matrix[t], want, atol=1e-6)
        h = cell.step(params, rx.RNNState(h), xs[t]).h
    assert dyn.input_jacobians(cell, params, xs).blocks.h.shape == (6, 4, 2)


def test_lstm_dc_dc_is_diag_forget_gate_when_h_is_ignored():
    # With w_h = 0 the gates depend on the input only, so c' = f c + i g gives dc'/dc = diag(f) exactly.
    cell, params, state, x = lstm_case(H=5)
    params = {**params, "w_h": jnp.zeros_like(params["w_h"])}
    a = np.asarray(x, np.float64) @ np.asarray(params["w_i"], np.float64) + np.asarray(params["b"], np.float64)
    f = sigmoid(a[5:10])
    jac = dyn.step_jacobian(cell, params, state, x)
    np.testing.assert_allclose(jac.blocks.c.c, np.diag(f), atol=1e-6)
    np.testing.assert_allclose(jac.blocks.c.h, 0.0, atol=0)


def test_jit_and_vmap():
    cell, params, state, x = lstm_case()
    xs = random_inputs((4, 7, 2), 9)
    batched = jax.vmap(lambda xs: dyn.step_jacobians(cell, params, xs))(xs)
    for b in range(4):
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, b=b: a[b], batched), dyn.step_jacobians(cell, params, xs[b]), atol=1e-6
        )
    eager = dyn.step_jacobian(cell, params, state, x)
    chex.assert_trees_all_close(jax.jit(dyn.step_jacobian, static_argnums=0)(cell, params, state, x), eager, atol=1e-6)


def test_trajectory_is_the_driver_with_the_initial_state():
    cell, params, state, _ = lstm_case()
    xs = random_inputs((5, 2), 11)
    states = dyn.trajectory(cell, params, xs, state)
    chex.assert_trees_all_close(jax.tree.map(lambda s: s[0], states), state)
    s = tuple(np.asarray(v, np.float64) for v in state)
    for t in range(5):
        s = np_lstm(to_numpy(params), s, np.asarray(xs[t], np.float64))
        np.testing.assert_allclose(states.c[t + 1], s[1], atol=1e-5)


def test_bad_input():
    cell, params, state, x = lstm_case()
    with pytest.raises(TypeError, match=r"state.*floating"):
        dyn.step_jacobian(cell, params, rx.LSTMState(h=jnp.zeros(3, jnp.int32), c=jnp.zeros(3, jnp.int32)), x)
    with pytest.raises(ValueError, match=r"one example.*vmap"):
        dyn.step_jacobian(cell, params, jax.tree.map(lambda s: s[None], state), x)
    with pytest.raises(ValueError, match=r"`x`.*\(5,\)"):
        dyn.step_jacobian(cell, params, state, jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`xs`.*\(T, I\)"):
        dyn.step_jacobians(cell, params, jnp.zeros((2, 3, 2)))
