"""Checkpoints of recurrax models with orbax-checkpoint, used directly (no wrapper of our own).

Reference: the model before saving. Restored params (and optimizer state) must give bit-identical
outputs and an identical next training step; the pytree structure (NamedTuple states, tuples of
layer params) must come back as it was.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import recurrax as rx
from recurrax.flax import linen as rx_linen
from recurrax.flax import nnx as rx_nnx

ocp = pytest.importorskip("orbax.checkpoint")

XS = jax.random.normal(jax.random.key(1), (4, 9, 3))
TARGETS = jnp.cumsum(XS[..., :1], axis=1)


class Model(nn.Module):
    @nn.compact
    def __call__(self, xs):
        layer = rx.stacked([rx.lstm(6), rx.gru(4)])  # tuple params, NamedTuple states
        return nn.Dense(1)(rx_linen.RNN(layer, learnable_initial_state=True)(xs))


def _train_step(model, tx):
    def loss_fn(params):
        return jnp.mean((model.apply({"params": params}, XS) - TARGETS) ** 2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def test_linen_params_and_optimizer_state_restore_exactly(tmp_path):
    model, tx = Model(), optax.adam(1e-2)
    params = jax.jit(model.init)(jax.random.key(0), XS)["params"]
    opt_state = tx.init(params)
    step = _train_step(model, tx)
    for _ in range(2):
        params, opt_state, _ = step(params, opt_state)
    trained = {"params": params, "opt_state": opt_state}

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", trained)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", jax.eval_shape(lambda: trained))

    assert jax.tree.structure(restored) == jax.tree.structure(trained)
    assert isinstance(restored["params"]["RNN_0"]["initial_state"][0], rx.LSTMState)
    chex.assert_trees_all_equal(restored, trained)
    # Equal params and optimizer state: the outputs, and training resumed from here, are the same.
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(apply({"params": restored["params"]}, XS), apply({"params": params}, XS))


def test_nnx_state_restores_into_an_abstract_model(tmp_path):
    make = lambda: rx_nnx.RNN(rx.lstm(5), 3, rngs=nnx.Rngs(0), learnable_initial_state=True)  # noqa: E731
    model = make()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(m, opt):
        opt.update(m, nnx.grad(lambda m: jnp.mean(m(XS) ** 2))(m))

    for _ in range(2):
        train_step(model, optimizer)
    expected = model(XS)

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "nnx", nnx.state(model))
    abstract = nnx.eval_shape(make)
    graphdef, abstract_state = nnx.split(abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(tmp_path / "nnx", abstract_state)
    restored = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(restored(XS), expected)
    assert not np.array_equal(make()(XS), expected)  # training changed something worth restoring
