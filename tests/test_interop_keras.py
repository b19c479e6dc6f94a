"""recurrax.interop.keras: converted weights compute what Keras 3's LSTM and GRU compute.

Reference: the Keras 3 cell equations (``keras/src/layers/rnn/lstm.py`` and ``gru.py``) re-written
in NumPy below, in Keras's own gate order (LSTM i, f, c, o; GRU z, r, h). Keras is not needed.
"""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import recurrax as rx
from recurrax.interop import keras as rx_keras

B, T, I, H = 3, 7, 5, 4
RNG = np.random.default_rng(0)
XS = RNG.normal(size=(B, T, I)).astype(np.float32)
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def keras_lstm(xs, kernel, recurrent_kernel, bias=None):
    h = np.zeros((xs.shape[0], recurrent_kernel.shape[0]), np.float64)
    c = np.zeros_like(h)
    ys = []
    for t in range(xs.shape[1]):
        z = xs[:, t] @ kernel + h @ recurrent_kernel + (0.0 if bias is None else bias)
        z0, z1, z2, z3 = np.split(z, 4, axis=-1)
        i, f, o = _sigmoid(z0), _sigmoid(z1), _sigmoid(z3)
        c = f * c + i * np.tanh(z2)
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys, 1), (h, c)


def keras_gru(xs, kernel, recurrent_kernel, bias=None, *, reset_after=True):
    units = recurrent_kernel.shape[0]
    h = np.zeros((xs.shape[0], units), np.float64)
    if bias is None:
        input_bias, recurrent_bias = np.zeros(3 * units), np.zeros(3 * units)
    elif reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, None
    ys = []
    for t in range(xs.shape[1]):
        x_z, x_r, x_h = np.split(xs[:, t] @ kernel + input_bias, 3, axis=-1)
        if reset_after:
            inner = h @ recurrent_kernel + (0.0 if recurrent_bias is None else recurrent_bias)
        else:
            inner = h @ recurrent_kernel[:, : 2 * units]
        r_z, r_r = inner[:, :units], inner[:, units : 2 * units]
        z, r = _sigmoid(x_z + r_z), _sigmoid(x_r + r_r)
        r_h = r * inner[:, 2 * units :] if reset_after else (r * h) @ recurrent_kernel[:, 2 * units :]
        hh = np.tanh(x_h + r_h)
        h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, 1), h


def _weights(gates, bias_shape):
    w = [RNG.normal(size=(I, gates * H)) * 0.5, RNG.normal(size=(H, gates * H)) * 0.5]
    if bias_shape is not None:
        w.append(RNG.normal(size=bias_shape) * 0.5)
    return [a.astype(np.float32) for a in w]


@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_matches_keras_equations(use_bias):
    weights = _weights(4, (4 * H,) if use_bias else None)
    cell, params = rx_keras.from_keras_lstm(weights, use_bias=use_bias)
    final, ys = rx.scan(cell, params, XS)
    want_ys, (want_h, want_c) = keras_lstm(XS, *weights)
    chex.assert_trees_all_close(ys, want_ys, **TOL)
    chex.assert_trees_all_close((final.h, final.c), (want_h, want_c), **TOL)
    step = jax.jit(cell.step)(params, cell.initial_state(params, (B,)), XS[:, 0])
    chex.assert_trees_all_close(step.h, want_ys[:, 0], **TOL)


@pytest.mark.parametrize(("reset_after", "use_bias"), [(True, True), (False, True), (True, False), (False, False)])
def test_gru_matches_keras_equations(reset_after, use_bias):
    bias_shape = ((2, 3 * H) if reset_after else (3 * H,)) if use_bias else None
    weights = _weights(3, bias_shape)
    cell, params = rx_keras.from_keras_gru(weights, reset_after=reset_after, use_bias=use_bias)
    final, ys = rx.scan(cell, params, XS)
    want_ys, want_h = keras_gru(XS, *weights, reset_after=reset_after)
    chex.assert_trees_all_close(ys, want_ys, **TOL)
    chex.assert_trees_all_close(final.h, want_h, **TOL)


def test_gate_order_is_shuffled_for_the_gru():
    # Keras's first block is the update gate z, recurrax's second: a hand-made check of the shuffle.
    kernel, recurrent, bias = _weights(3, (2, 3 * H))
    _, params = rx_keras.from_keras_gru({"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias})
    np.testing.assert_array_equal(params["w_i"][:, H : 2 * H], kernel[:, :H])
    np.testing.assert_array_equal(params["w_h"][:, :H], recurrent[:, H : 2 * H])
    np.testing.assert_array_equal(params["b_hn"], bias[1, 2 * H :])
    np.testing.assert_allclose(params["b"][:H], bias[0, H : 2 * H] + bias[1, H : 2 * H])


def test_round_trips():
    lstm_params = rx.lstm(H).init(jax.random.key(0), I)
    chex.assert_trees_all_equal(rx_keras.from_keras_lstm(rx_keras.to_keras_lstm(lstm_params))[1], lstm_params)
    for reset_after in (True, False):
        gru_params = rx.gru(H, reset_after=reset_after).init(jax.random.key(1), I)
        weights = rx_keras.to_keras_gru(gru_params, reset_after=reset_after)
        again = rx_keras.from_keras_gru(weights, reset_after=reset_after)[1]
        chex.assert_trees_all_equal(again, gru_params)

    # Keras -> recurrax -> Keras: kernels exactly, and the (re-split) biases compute the same.
    weights = _weights(3, (2, 3 * H))
    back = rx_keras.to_keras_gru(rx_keras.from_keras_gru(weights)[1])
    np.testing.assert_array_equal(back[0], weights[0])
    np.testing.assert_array_equal(back[1], weights[1])
    chex.assert_trees_all_close(keras_gru(XS, *back)[0], keras_gru(XS, *weights)[0], **TOL)
    weights = _weights(4, (4 * H,))
    chex.assert_trees_all_equal(rx_keras.to_keras_lstm(rx_keras.from_keras_lstm(weights)[1]), weights)


def test_bad_weights_name_the_offending_key():
    kernel, recurrent, bias = _weights(4, (4 * H,))
    with pytest.raises(ValueError, match="missing `bias`"):
        rx_keras.from_keras_lstm([kernel, recurrent])
    with pytest.raises(ValueError, match="missing `recurrent_kernel`"):
        rx_keras.from_keras_lstm({"kernel": kernel, "bias": bias})
    with pytest.raises(ValueError, match="unexpected `bias`"):
        rx_keras.from_keras_lstm({"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}, use_bias=False)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(16,\), got \(12,\)"):
        rx_keras.from_keras_lstm([kernel, recurrent, bias[:12]])
    with pytest.raises(ValueError, match=r"`kernel` must have shape \(I, 16\)"):
        rx_keras.from_keras_lstm([kernel[:, :12], recurrent, bias])
    with pytest.raises(ValueError, match=r"`recurrent_kernel` must have shape \(H, 4\*H\)"):
        rx_keras.from_keras_lstm([kernel, recurrent[:3], bias])
    with pytest.raises(TypeError, match="`kernel` must be a floating-point"):
        rx_keras.from_keras_lstm([kernel.astype(np.int32), recurrent, bias])
    with pytest.raises(ValueError, match="`recurrent_activation='exponential'` has no recurrax equivalent"):
        rx_keras.from_keras_lstm([kernel, recurrent, bias], recurrent_activation="exponential")
    with pytest.raises(ValueError, match="`activation='mish'` has no recurrax equivalent"):
        rx_keras.from_keras_gru(_weights(3, (2, 3 * H)), activation="mish")

    gru_kernel, gru_recurrent, gru_bias = _weights(3, (2, 3 * H))
    with pytest.raises(ValueError, match=r"`bias` must have shape \(12,\), got \(2, 12\)"):
        rx_keras.from_keras_gru([gru_kernel, gru_recurrent, gru_bias], reset_after=False)
    with pytest.raises(ValueError, match="`w_proj`"):
        rx_keras.to_keras_lstm(rx.lstm(H, proj_size=2).init(jax.random.key(0), I))
    with pytest.raises(ValueError, match="`b_hn`"):
        rx_keras.to_keras_gru(rx.gru(H, reset_after=False).init(jax.random.key(0), I), reset_after=True)
