"""recurrax.flax.linen.RNN and recurrax.flax.nnx.RNN: thin adapters over recurrax.scan / Layer.apply.

Reference: a direct call of ``recurrax.scan`` (or ``layer.apply``) with the same params, which the
adapters must reproduce bit for bit; gradients against ``jax.grad`` of that direct call.
"""

from __future__ import annotations

import chex
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import recurrax as rx
from recurrax.flax import linen as rx_linen
from recurrax.flax import nnx as rx_nnx

B, T, I = 3, 6, 5
XS = jax.random.normal(jax.random.key(1), (B, T, I))
LENGTHS = jnp.array([6, 2, 4])


def _cells():
    return {
        "lstm": rx.lstm(4),
        "gru": rx.gru(3),
        "stacked_bidirectional": rx.stacked([rx.bidirectional(rx.lstm(4), rx.gru(4)), rx.elman(3)], dropout=0.25),
    }


def _direct(cell, params, xs, state=None, *, lengths=None, reverse=False):
    if isinstance(cell, rx.Cell):
        return rx.scan(cell, params, xs, state, lengths=lengths, reverse=reverse)
    return cell.apply(params, xs, state, lengths=lengths)


def _nnx_with(cell, params, **kwargs):
    """An NNX RNN whose params are set to ``params``."""
    module = rx_nnx.RNN(cell, I, rngs=nnx.Rngs(7), **kwargs)
    variables = jax.tree.leaves(module.params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    for variable, value in zip(variables, jax.tree.leaves(params), strict=True):
        variable[...] = value
    return module


def test_no_shadowing_of_flax():
    assert rx_linen.nn is flax.linen
    assert rx_nnx.nnx is nnx


@pytest.mark.parametrize("name", ["lstm", "gru", "stacked_bidirectional"])
def test_linen_nnx_and_direct_agree_exactly(name):
    cell = _cells()[name]
    module = rx_linen.RNN(cell, return_state=True)
    variables = module.init(jax.random.key(0), XS, lengths=LENGTHS)
    params = variables["params"]["cell"]
    chex.assert_trees_all_equal_shapes(params, cell.init(jax.random.key(0), I))

    want_final, want_ys = _direct(cell, params, XS, lengths=LENGTHS)
    lin_final, lin_ys = module.apply(variables, XS, lengths=LENGTHS)
    nnx_final, nnx_ys = _nnx_with(cell, params, return_state=True)(XS, lengths=LENGTHS)
    np.testing.assert_array_equal(lin_ys, want_ys)
    np.testing.assert_array_equal(nnx_ys, want_ys)
    chex.assert_trees_all_equal(lin_final, want_final)
    chex.assert_trees_all_equal(nnx_final, want_final)


def test_linen_options_forward_to_scan():
    cell = rx.lstm(4)
    variables = rx_linen.RNN(cell).init(jax.random.key(0), XS)
    params = variables["params"]["cell"]
    state = cell.initial_state(params, (B,))
    state = jax.tree.map(lambda s: s + 0.5, state)
    module = rx_linen.RNN(cell, unroll=2, remat=True)
    got = module.apply(variables, XS, initial_state=state, lengths=LENGTHS, reverse=True)
    want = rx.scan(cell, params, XS, state, lengths=LENGTHS, reverse=True)[1]
    chex.assert_trees_all_close(got, want, atol=1e-6)

    tm = rx_linen.RNN(cell, time_major=True).apply(variables, jnp.swapaxes(XS, 0, 1))
    chex.assert_trees_all_close(jnp.swapaxes(tm, 0, 1), rx.scan(cell, params, XS)[1], atol=1e-6)

    jitted = jax.jit(lambda v, x: module.apply(v, x, lengths=LENGTHS, reverse=True))(variables, XS)
    chex.assert_trees_all_close(jitted, module.apply(variables, XS, lengths=LENGTHS, reverse=True), atol=1e-6)


def test_reverse_of_a_layer_equals_reverse_scan_of_its_cell():
    # A Layer has no `reverse` of its own; the adapter flips the valid parts around it.
    cell = rx.gru(3)
    variables = rx_linen.RNN(rx.as_layer(cell)).init(jax.random.key(0), XS)
    params = variables["params"]["cell"]
    got = rx_linen.RNN(rx.as_layer(cell)).apply(variables, XS, lengths=LENGTHS, reverse=True)
    want = rx.scan(cell, params, XS, lengths=LENGTHS, reverse=True)[1]
    chex.assert_trees_all_close(got, want, atol=1e-6)
    got_nnx = _nnx_with(rx.as_layer(cell), params)(XS, lengths=LENGTHS, reverse=True)
    chex.assert_trees_all_close(got_nnx, want, atol=1e-6)


def test_linen_learnable_initial_state():
    cell = rx.lstm(4)
    module = rx_linen.RNN(cell, learnable_initial_state=True)
    variables = module.init(jax.random.key(0), XS)
    s0 = variables["params"]["initial_state"]
    assert isinstance(s0, rx.LSTMState)
    chex.assert_trees_all_equal(s0, rx.LSTMState(jnp.zeros(4), jnp.zeros(4)))

    learned = rx.LSTMState(jnp.linspace(-1, 1, 4), jnp.linspace(2, -2, 4))
    variables = {"params": {**variables["params"], "initial_state": learned}}
    batched = jax.tree.map(lambda s: jnp.broadcast_to(s, (B, 4)), learned)
    want = rx.scan(cell, variables["params"]["cell"], XS, batched)[1]
    np.testing.assert_array_equal(module.apply(variables, XS), want)

    grads = jax.grad(lambda v: jnp.sum(module.apply(v, XS) ** 2))(variables)
    assert float(jnp.abs(grads["params"]["initial_state"].c).sum()) > 0


def test_linen_dropout_uses_the_dropout_stream():
    cell = _cells()["stacked_bidirectional"]
    module = rx_linen.RNN(cell)
    variables = module.init(jax.random.key(0), XS)
    eval_ys = module.apply(variables, XS)
    np.testing.assert_array_equal(eval_ys, cell.apply(variables["params"]["cell"], XS)[1])
    apply = jax.jit(lambda key: module.apply(variables, XS, deterministic=False, rngs={"dropout": key}))
    train = lambda seed: apply(jax.random.key(seed))  # noqa: E731
    assert not np.allclose(train(1), eval_ys)
    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    with pytest.raises(flax.errors.InvalidRngError):
        module.apply(variables, XS, deterministic=False)


def test_nnx_dropout_train_and_eval():
    cell = _cells()["stacked_bidirectional"]
    module = rx_nnx.RNN(cell, I, rngs=nnx.Rngs(params=0, dropout=1))
    eval_ys = module(XS)
    np.testing.assert_array_equal(eval_ys, cell.apply(module.cell_params(), XS)[1])
    module.train()
    first, second = module(XS), module(XS)
    assert not np.allclose(first, eval_ys)
    assert not np.allclose(first, second)  # the stream advances
    module.eval()
    np.testing.assert_array_equal(module(XS), eval_ys)


def test_nnx_trains_with_jit_grad_and_optimizer():
    cell = rx.lstm(4)
    module = rx_nnx.RNN(cell, I, rngs=nnx.Rngs(0), learnable_initial_state=True)
    targets = jnp.sin(jnp.arange(T, dtype=jnp.float32))[None, :, None]

    def loss_fn(m):
        return jnp.mean((m(XS, lengths=LENGTHS)[..., :1] - targets) ** 2)

    # Reference gradient: jax.grad of the direct scan with the same (zero) initial state.
    def direct_loss(params):
        return jnp.mean((rx.scan(cell, params, XS, lengths=LENGTHS)[1][..., :1] - targets) ** 2)

    grads = nnx.grad(loss_fn)(module)
    want = jax.grad(direct_loss)(module.cell_params())
    got = nnx.to_pure_dict(grads["params"])
    chex.assert_trees_all_close(got, want, atol=1e-6)

    optimizer = nnx.Optimizer(module, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(m, opt):
        loss, g = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, g)
        return loss

    losses = [float(train_step(module, optimizer)) for _ in range(20)]
    assert losses[-1] < 0.7 * losses[0]


def test_input_size_mismatch_names_both_sizes():
    cell = rx.lstm(4)
    module = rx_linen.RNN(cell)
    variables = module.init(jax.random.key(0), XS)
    with pytest.raises(ValueError, match=r"3 features.*'w_i'\]` has shape \(5, 16\).*need \(3, 16\)"):
        module.apply(variables, XS[..., :3])
    with pytest.raises(ValueError, match=r"3 features.*input_size=5"):
        rx_linen.RNN(cell, input_size=5).init(jax.random.key(0), XS[..., :3])
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\).*\(3, 6, 3\)"):
        rx_nnx.RNN(cell, I, rngs=nnx.Rngs(0))(XS[..., :3])
    stacked = rx.stacked([rx.lstm(4), rx.gru(3)])
    variables = rx_linen.RNN(stacked).init(jax.random.key(0), XS)
    with pytest.raises(ValueError, match=r"3 features.*\[0\]\['w_i'\]` has shape \(5, 16\)"):
        rx_linen.RNN(stacked).apply(variables, XS[..., :3])


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"recurrax\.Cell or recurrax\.Layer"):
        rx_linen.RNN(flax.linen.LSTMCell(4)).init(jax.random.key(0), XS)
    with pytest.raises(ValueError, match="unroll"):
        rx_nnx.RNN(rx.stacked([rx.lstm(4)]), I, rngs=nnx.Rngs(0), unroll=4)
    with pytest.raises(ValueError, match="xs"):
        rx_linen.RNN(rx.lstm(4)).init(jax.random.key(0), jnp.ones(5))
