"""One step of every cell against its equations re-written in NumPy (``tests/reference.py``).

float32 to 1e-5; a bf16/fp16 compute dtype against the same equations with the matmul operands
rounded to that dtype (so ignoring ``dtype`` would fail), state kept in float32; float64 to 1e-12.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from reference import CASES, CLIP, random_inputs, random_params, random_state, to_numpy

# (hidden_size, input_size, batch_shape): H = 1, I != H, zero to two batch dims.
SIZES = [(1, 1, ()), (3, 5, (2,)), (4, 2, (2, 3))]
TOL32 = dict(atol=1e-5, rtol=1e-5)


def _setup(name, H, I, batch, seed=0, **kwargs):
    """A cell built with ``kwargs``, random params and state in its param dtype, and an input ``(*batch, I)``."""
    cell = CASES[name].make(H, **kwargs)
    params = random_params(cell, seed, I)
    state = random_state(cell, params, batch, seed + 1)
    x = random_inputs((*batch, I), seed + 2, params["w_i"].dtype)
    return cell, params, state, x


def _expected(name, params, state, x, dtype=None):
    return CASES[name].step(to_numpy(params), to_numpy(state), np.asarray(x, np.float64), dtype=dtype)


@pytest.mark.parametrize("H,I,batch", SIZES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_step_float32_matches_numpy(name, H, I, batch):
    cell, params, state, x = _setup(name, H, I, batch)
    got = jax.jit(cell.step)(params, state, x)
    assert type(got) is type(state)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, state)
    chex.assert_trees_all_close(tuple(got), _expected(name, params, state, x), **TOL32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_equals_transition_of_project(name):
    cell, params, state, x = _setup(name, 3, 2, (2,), seed=1)
    want = cell.transition(params, state, cell.project(params, x))
    chex.assert_trees_all_close(cell.step(params, state, x), want, atol=1e-7, rtol=1e-7)
    # The projection is time-parallel: a whole (T, *batch, I) block at once equals step by step.
    xs = jnp.stack([x, 2.0 * x, -x])
    chex.assert_trees_all_close(cell.project(params, xs), jnp.stack([cell.project(params, v) for v in xs]), **TOL32)


# Rounding the matmul operands to bf16 (8 bits) / fp16 (11 bits) moves a step by far more than this.
@pytest.mark.parametrize("compute,rounding", [(jnp.bfloat16, 2e-4), (jnp.float16, 2e-5)], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_step_low_precision_compute_keeps_float32_state(name, compute, rounding):
    cell, params, state, x = _setup(name, 4, 6, (3,), seed=2, dtype=compute)
    got = jax.jit(cell.step)(params, state, x)
    for leaf in got:
        assert leaf.dtype == jnp.float32
    chex.assert_trees_all_close(tuple(got), _expected(name, params, state, x, dtype=compute), atol=1e-5, rtol=1e-5)
    # The compute dtype is honoured: the float32 equations are farther away than the tolerance above.
    full = _expected(name, params, state, x)
    assert max(np.abs(np.asarray(g) - w).max() for g, w in zip(got, full)) > rounding


@pytest.mark.parametrize("H,I,batch", SIZES[2:])
@pytest.mark.parametrize("name", sorted(CASES))
def test_step_float64_matches_numpy(name, H, I, batch):
    with jax.enable_x64(True):
        cell, params, state, x = _setup(name, H, I, batch, seed=3, param_dtype=jnp.float64)
        got = jax.jit(cell.step)(params, state, x)
        for leaf in got:
            assert leaf.dtype == jnp.float64
        chex.assert_trees_all_close(tuple(got), _expected(name, params, state, x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["elman", "lstm", "lstm_all", "gru", "mgu"])
def test_param_dtype_sets_params_and_state_dtype(name):
    cell = CASES[name].make(3, param_dtype=jnp.bfloat16)

    def run(key):
        params = cell.init(key, 2)
        state = cell.initial_state(params, (2,))
        return params, state, cell.step(params, state, jnp.ones((2, 2), jnp.bfloat16))

    for leaf in jax.tree.leaves(jax.eval_shape(run, jax.random.key(0))):
        assert leaf.dtype == jnp.bfloat16


def test_cell_clip_is_active_in_the_clip_cases():
    # Guards the clip tests above against a state that never reaches the clip.
    cell, params, state, x = _setup("lstm_clip", 4, 2, (2, 3))
    c = np.asarray(cell.step(params, state, x).c)
    assert np.isclose(np.abs(c), CLIP).any() and np.abs(c).max() <= CLIP


def test_lstm_proj_size_shapes():
    cell = rx.lstm(6, proj_size=2)
    params = random_params(cell, 0, 3)
    assert params["w_h"].shape == (2, 24) and params["w_proj"].shape == (6, 2)
    state = jax.jit(cell.step)(params, cell.initial_state(params, (5,)), jnp.ones((5, 3)))
    assert state.h.shape == (5, 2) and state.c.shape == (5, 6)
    assert cell.output(state) is state.h


@pytest.mark.parametrize(
    "name,keys",
    [
        ("elman", {"w_i", "w_h", "b"}),
        ("elman_nobias", {"w_i", "w_h"}),
        ("lstm", {"w_i", "w_h", "b"}),
        ("lstm_all", {"w_i", "w_h", "b", "w_peep", "w_proj", "ln_i", "ln_h", "ln_c_scale", "ln_c_bias"}),
        ("lstm_nobias", {"w_i", "w_h"}),
        ("gru", {"w_i", "w_h", "b", "b_hn"}),
        ("gru_nobias", {"w_i", "w_h"}),
        ("gru_reset_before", {"w_i", "w_h", "b"}),
        ("mgu", {"w_i", "w_h", "b"}),
    ],
)
def test_param_layout(name, keys):
    H, I = 4, 3
    params = random_params(CASES[name].make(H), 0, I)
    assert set(params) == keys
    gates = params["w_i"].shape[1] // H
    assert params["w_i"].shape == (I, gates * H)
    assert params["w_h"].shape[1] == gates * H
    assert gates == {"elman": 1, "lstm": 4, "gru": 3, "mgu": 2}[name.split("_")[0]]
