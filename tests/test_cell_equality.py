"""Cells built with the same arguments are equal and hash equal, so ``jit`` caches hit; a cell is a leafless
pytree, so it may be passed to a jitted function as an ordinary argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import recurrax as rx

BUILDERS = {
    "lstm": lambda **kw: rx.lstm(4, **kw),
    "gru": lambda **kw: rx.gru(4, **kw),
    "mgu": lambda **kw: rx.mgu(4, **kw),
    "elman": lambda **kw: rx.elman(4, **kw),
    "min_gru": lambda **kw: rx.min_gru(4, **kw),
    "min_lstm": lambda **kw: rx.min_lstm(4, **kw),
    "lru": lambda **kw: rx.lru(4, 3, **kw),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_arguments_equal_and_hash_equal(name):
    a, b = BUILDERS[name](), BUILDERS[name]()
    assert a is not b and a.step is not b.step
    assert a == b and (a != b) is False and hash(a) == hash(b)
    assert BUILDERS[name](param_dtype=jnp.bfloat16) != a


def test_defaults_spelled_out_equal_defaults_and_other_sizes_differ():
    assert rx.lstm(4) == rx.lstm(4, forget_bias=1.0) == rx.lstm(hidden_size=4)
    assert rx.lstm(4) != rx.lstm(5)
    assert rx.lstm(4) != rx.lstm(4, peephole=True)
    assert rx.gru(4) != rx.gru(4, reset_after=False)
    assert rx.elman(4, activation=jnp.tanh) != rx.elman(4, activation=jax.nn.relu)


def test_a_cell_with_a_replaced_function_equals_only_itself():
    cell = rx.gru(4)
    replaced = cell._replace(transition=lambda params, state, z: state)
    assert replaced != cell and replaced != rx.gru(4)._replace(transition=replaced.transition)
    assert replaced == replaced and hash(replaced) == hash(replaced._replace())
    custom = rx.make_cell(
        "custom",
        init=cell.init,
        initial_state=cell.initial_state,
        project=cell.project,
        transition=cell.transition,
        input_size=lambda params: params["w_i"].shape[0],
    )
    assert custom.spec is None and custom == custom and custom != cell


def test_jit_traces_once_for_equal_cells_passed_either_way():
    traces = []

    def run(cell, params, xs):
        traces.append(cell)
        return rx.scan(cell, params, xs)[1]

    params = rx.gru(4).init(jax.random.key(0), 3)
    xs = jnp.ones((2, 5, 3))
    as_argument, as_static = jax.jit(run), jax.jit(run, static_argnums=0)
    want = rx.scan(rx.gru(4), params, xs)[1]
    for _ in range(3):
        assert jnp.allclose(as_argument(rx.gru(4), params, xs), want)
        assert jnp.allclose(as_static(rx.gru(4), params, xs), want)
    assert len(traces) == 2
    assert jax.tree.leaves(rx.gru(4)) == []
    assert jnp.allclose(jax.jit(rx.scan)(rx.gru(4), params, xs)[1], want)


def test_built_with_names_the_constructor_and_its_arguments_until_a_function_is_replaced():
    from recurrax.core import built_with

    name, arguments = built_with(rx.lstm(4, peephole=True))
    assert name == "lstm" and arguments["hidden_size"] == 4 and arguments["peephole"] is True
    assert arguments["forget_bias"] == 1.0  # defaults included
    assert built_with(rx.lstm(4)._replace(project=lambda params, x: x)) is None


LAYERS = {
    "as_layer": lambda **kw: rx.as_layer(rx.gru(4), **kw),
    "stacked": lambda **kw: rx.stacked([rx.lstm(4), rx.gru(4)], **kw),
    "bidirectional": lambda **kw: rx.bidirectional(rx.gru(4), rx.gru(4), **kw),
    "stacked of bidirectional": lambda **kw: rx.stacked([rx.bidirectional(rx.lstm(4), rx.lstm(4))] * 2, **kw),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_built_alike_are_equal_and_jit_traces_them_once(name):
    a, b = LAYERS[name](), LAYERS[name]()
    assert a is not b and a.apply is not b.apply
    assert a == b and hash(a) == hash(b)
    assert LAYERS[name](unroll=2) != a
    assert a._replace(apply=b.apply) != a  # a replaced function: equal only to itself

    traces = []

    def run(layer, params, xs):
        traces.append(layer)
        return layer.apply(params, xs)[1]

    params = a.init(jax.random.key(0), 3)
    xs = jnp.ones((2, 5, 3))
    want, compiled = run(a, params, xs), jax.jit(run)
    for _ in range(2):
        assert jnp.allclose(compiled(LAYERS[name](), params, xs), want, atol=1e-6)
    assert len(traces) == 2  # the eager reference call and one trace under jit
    assert jax.tree.leaves(a) == []


def test_stacks_of_lists_and_tuples_are_equal():
    assert rx.stacked([rx.lstm(4)] * 2) == rx.stacked((rx.lstm(4), rx.lstm(4)))
    assert rx.stacked([rx.lstm(4)] * 2) != rx.stacked([rx.lstm(4)] * 3)
    assert rx.bidirectional(rx.gru(4), rx.gru(4)) != rx.bidirectional(rx.gru(4), rx.gru(4), merge="sum")
