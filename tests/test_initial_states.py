"""``recurrax.initial_state``: starts drawn from an initializer (Flax's ``carry_init``), leaf by leaf."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx

H, I = 8, 3


def test_without_init_or_key_it_is_the_cells_zeros():
    cell = rx.lstm(H)
    params = cell.init(jax.random.key(0), I)
    chex.assert_trees_all_equal(rx.initial_state(cell, params, (2,)), cell.initial_state(params, (2,)))


def test_a_constant_initializer_matches_flax_carry_init():
    """Flax ``LSTMCell(carry_init=constant(0.3)).initialize_carry`` gives ``(c, h)`` of 0.3: the same start."""
    init = jax.nn.initializers.constant(0.3)
    cell = rx.lstm(H)
    params = cell.init(jax.random.key(0), I)
    state = rx.initial_state(cell, params, (2, 5), init, key=jax.random.key(1))
    c, h = nn.LSTMCell(H, carry_init=init).initialize_carry(jax.random.key(1), (2, 5, I))
    chex.assert_trees_all_equal((state.c, state.h), (c, h))


def test_a_key_alone_gives_standard_normal_leaves_each_with_its_own_draw():
    cell = rx.lstm(H)
    params = cell.init(jax.random.key(0), I)
    state = rx.initial_state(cell, params, (4096,), key=jax.random.key(2))
    for leaf in state:
        assert leaf.shape == (4096, H) and leaf.dtype == jnp.float32
        assert abs(float(jnp.mean(leaf))) < 0.03 and abs(float(jnp.std(leaf)) - 1.0) < 0.03
    assert not np.allclose(state.h, state.c)  # one key per leaf
    again = rx.initial_state(cell, params, (4096,), key=jax.random.key(2))
    chex.assert_trees_all_equal(again, state)
    final, _ = rx.scan(cell, params, jnp.zeros((4096, 2, I)), state)  # a valid start for scan
    assert final.h.shape == (4096, H)


def test_complex_leaves_get_complex_draws_and_layers_work():
    cell = rx.lru(H, 4)
    params = cell.init(jax.random.key(0), I)
    state = rx.initial_state(cell, params, (3,), jax.nn.initializers.normal(0.5), key=jax.random.key(3))
    assert state.x.dtype == jnp.complex64 and float(jnp.abs(state.x.imag).max()) > 0
    layer = rx.stacked([rx.gru(H), rx.lstm(H)])
    layer_params = layer.init(jax.random.key(4), I)
    stack_state = rx.initial_state(layer, layer_params, (2,), jax.nn.initializers.ones, key=jax.random.key(5))
    chex.assert_trees_all_equal(stack_state, jax.tree.map(jnp.ones_like, layer.initial_state(layer_params, (2,))))


def test_initial_state_under_jit_and_vmap_over_keys():
    cell = rx.gru(H)
    params = cell.init(jax.random.key(0), I)
    keys = jax.random.split(jax.random.key(6), 5)
    draw = lambda k: rx.initial_state(cell, params, (), key=k)  # noqa: E731
    batched = jax.jit(jax.vmap(draw))(keys)
    chex.assert_trees_all_close(batched, jax.tree.map(lambda *s: jnp.stack(s), *[draw(k) for k in keys]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(init=jax.nn.initializers.zeros), ValueError, r"`init` draws at random, so it needs a `key`"),
        (dict(init="normal", key=jax.random.key(0)), TypeError, r"`init` must be an initializer"),
        (
            dict(init=lambda k, shape, dtype: jnp.zeros(shape[:-1], dtype), key=jax.random.key(0)),
            ValueError,
            r"for `state.h` it was asked for \(2, 8\) float32, got \(2,\) float32",
        ),
        (dict(batch_shape=(2.5,)), ValueError, r"`batch_shape` must be a tuple of ints >= 0"),
    ],
    ids=["no key", "a name", "wrong shape", "batch shape"],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    cell = rx.gru(H)
    params = cell.init(jax.random.key(0), I)
    kwargs = {"batch_shape": (2,), **kwargs}
    with pytest.raises(error, match=match):
        rx.initial_state(cell, params, **kwargs)
