"""Initialisers: PyTorch's uniform bound, Glorot + orthogonal gate blocks, forget bias and chrono init.

References: the distributions' definitions (support, moments), ``W^T W = I`` for orthogonal blocks,
and Tallec & Ollivier (2018) for the chrono bias ranges.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx

H, I = 16, 8
GATES = {"elman": 1, "lstm": 4, "gru": 3, "mgu": 2}


def _init(cell, input_size=I, seed=0):
    return jax.tree.map(np.asarray, cell.init(jax.random.key(seed), input_size))


def _blocks(w, hidden):
    return [w[:, g * hidden : (g + 1) * hidden] for g in range(w.shape[1] // hidden)]


@pytest.mark.parametrize("family", sorted(GATES))
def test_pytorch_scheme_is_uniform_within_one_over_sqrt_hidden(family):
    params = _init(getattr(rx, family)(H, init="pytorch"))
    bound = 1.0 / math.sqrt(H)
    for name, leaf in params.items():
        # LSTM's forget block carries the +1 forget bias on top of the uniform draw.
        values = np.delete(leaf, np.s_[H : 2 * H]) if (family, name) == ("lstm", "b") else leaf.ravel()
        assert np.abs(values).max() <= bound, name
    w = np.concatenate([params["w_i"].ravel(), params["w_h"].ravel()])
    assert np.abs(w).max() > 0.95 * bound  # the whole range is used
    assert abs(w.mean()) < 0.1 * bound and abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound


@pytest.mark.parametrize("family", sorted(GATES))
def test_glorot_orthogonal_gives_orthogonal_gate_blocks_and_zero_bias(family):
    params = _init(getattr(rx, family)(H, init="glorot_orthogonal"))
    blocks = _blocks(params["w_h"], H)
    assert len(blocks) == GATES[family]
    for w in blocks:
        np.testing.assert_allclose(w.T @ w, np.eye(H), atol=1e-5)
    # The gates are drawn independently, not one block repeated.
    if len(blocks) > 1:
        assert not np.allclose(blocks[0], blocks[1])
    glorot = math.sqrt(6.0 / (I + H))  # per gate block: fan_in I, fan_out H
    assert np.abs(params["w_i"]).max() <= glorot and np.abs(params["w_i"]).max() > 0.9 * glorot
    expected_b = np.zeros(GATES[family] * H)
    if family == "lstm":
        expected_b[H : 2 * H] = 1.0  # the default forget bias
    np.testing.assert_array_equal(params["b"], expected_b)


def test_glorot_orthogonal_with_projection_has_orthonormal_rows():
    # w_h is (P, 4H) with P < H: each (P, H) block has orthonormal rows.
    P = 4
    params = _init(rx.lstm(H, proj_size=P, init="glorot_orthogonal"))
    for w in _blocks(params["w_h"], H):
        np.testing.assert_allclose(w @ w.T, np.eye(P), atol=1e-5)


@pytest.mark.parametrize("scheme", ["pytorch", "glorot_orthogonal"])
def test_forget_bias_lands_in_the_forget_block(scheme):
    base = _init(rx.lstm(H, forget_bias=0.0, init=scheme))["b"]
    shifted = _init(rx.lstm(H, forget_bias=2.5, init=scheme))["b"]
    expected = base.copy()
    expected[H : 2 * H] += 2.5  # gate order i, f, g, o
    np.testing.assert_allclose(shifted, expected, atol=1e-6)


@pytest.mark.parametrize("t_max", [3.0, 100.0])
def test_lstm_chrono_bias(t_max):
    b = _init(rx.lstm(H, chrono_t_max=t_max), seed=1)["b"]
    b_i, b_f = b[:H], b[H : 2 * H]
    assert np.all(b_f >= 0.0) and np.all(b_f <= math.log(t_max - 1.0) + 1e-6)
    np.testing.assert_allclose(b_i, -b_f)
    assert np.ptp(b_f) > 0.1 * math.log(t_max - 1.0)  # spread over the range, not one value
    bound = 1.0 / math.sqrt(H)  # g and o keep the scheme's draw
    assert np.abs(b[2 * H :]).max() <= bound


def test_gru_and_mgu_chrono_bias():
    t_max = 50.0
    b = _init(rx.gru(H, chrono_t_max=t_max))["b"]
    b_z = b[H : 2 * H]  # update gate: h' = (1 - z) n + z h, so z keeps
    assert np.all(b_z >= 0.0) and np.all(b_z <= math.log(t_max - 1.0) + 1e-6)
    b = _init(rx.mgu(H, chrono_t_max=t_max))["b"]
    b_f = b[:H]  # MGU's f writes: h' = (1 - f) h + f n
    assert np.all(b_f <= 0.0) and np.all(b_f >= -math.log(t_max - 1.0) - 1e-6)


def test_custom_scheme_and_determinism():
    ones = rx.init.Scheme(
        kernel=jax.nn.initializers.ones, recurrent=jax.nn.initializers.zeros, bias=jax.nn.initializers.zeros
    )
    params = _init(rx.gru(3, init=ones), input_size=2)
    np.testing.assert_array_equal(params["w_i"], np.ones((2, 9)))
    np.testing.assert_array_equal(params["w_h"], np.zeros((3, 9)))
    a, b, c = (_init(rx.lstm(4), seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a["w_h"], b["w_h"])
    assert not np.allclose(a["w_h"], c["w_h"])


def test_init_honours_param_dtype():
    params = jax.eval_shape(lambda k: rx.lstm(4, peephole=True, param_dtype=jnp.bfloat16).init(k, 3), jax.random.key(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
