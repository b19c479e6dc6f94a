"""The ``stack`` backend: ``scan`` of a stack's one-step form runs layer after layer, each on its own backend.

Its values, states and derivatives under every option are held to the step-by-step loop by the conformance
suite (the ``stack`` cell there); these tests pin which backends run, and that replaced functions are honoured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import backends


def _stack(*cells):
    return rx.as_cell(rx.stacked(list(cells)))


def test_auto_runs_a_stack_layer_after_layer_with_each_layer_on_its_fast_backend():
    cell = _stack(rx.lstm(8), rx.lstm(8))
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (8, 32, 4))  # T * N = 256: native_lstm's size on CPU
    assert backends.which(cell, params, xs) == "stack"
    hlo = jax.jit(lambda p, x: rx.scan(cell, p, x)).lower(params, xs).as_text()
    if jax.default_backend() == "cpu":  # one native kernel per layer, no step-by-step loop of the stack
        assert hlo.count("custom_call @recurrax_lstm_forward") == 2
    final, ys = rx.scan(cell, params, xs)
    want_final, want = rx.scan(cell, params, xs, backend="sequential")
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    for got, ref in zip(jax.tree.leaves(final), jax.tree.leaves(want_final)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_a_replaced_function_is_honoured_in_a_layer_and_in_the_stack():
    lstm = rx.lstm(3)
    noisy = lstm._replace(transition=lambda p, s, z: jax.tree.map(lambda a: 0.5 * a, lstm.transition(p, s, z)))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 2))

    def loop(cell, params):
        state = cell.initial_state(params, (2,))
        for t in range(xs.shape[1]):
            state = cell.step(params, state, xs[:, t])
        return cell.output(state)

    cell = _stack(noisy, rx.gru(3))
    params = cell.init(jax.random.key(0), 2)
    assert backends.which(cell, params, xs) == "stack"  # the layer's replaced transition runs on sequential
    np.testing.assert_allclose(rx.scan(cell, params, xs)[1][:, -1], loop(cell, params), rtol=1e-6, atol=1e-7)

    whole = _stack(rx.lstm(3), rx.gru(3))
    replaced = whole._replace(transition=lambda p, s, z: jax.tree.map(jnp.zeros_like, whole.transition(p, s, z)))
    assert backends.which(replaced, params, xs) == "sequential"
    np.testing.assert_array_equal(rx.scan(replaced, params, xs)[1], 0.0)
    with pytest.raises(ValueError, match=r"backend 'stack' cannot run this call: the cell's `project`, `transition`"):
        rx.scan(replaced, params, xs, backend="stack")
    # The backend computes the stack's outputs itself, so a replaced `output` must take the call off it too.
    first_h = whole._replace(output=lambda s: s[0].h)
    assert backends.which(first_h, params, xs) == "sequential"
    np.testing.assert_allclose(rx.scan(first_h, params, xs)[1][:, -1], loop(first_h, params), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"'stack' runs only the one-step form of a stacked layer"):
        rx.scan(rx.lstm(3), rx.lstm(3).init(jax.random.key(0), 2), xs, backend="stack")


def test_native_layers_inside_a_stack_under_every_option_equal_sequential():
    """The conformance suite's stack is small, so its layers run on XLA; here they run on the native kernels."""
    cell = rx.as_cell(rx.stacked([rx.lstm(8), rx.gru(8), rx.lstm(8)], residual=True))
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (32, 8, 4))
    lengths = jnp.arange(32) % 9
    resets = jax.random.bernoulli(jax.random.key(2), 0.2, (32, 8))
    reset_state = jax.tree.map(lambda a: a + 0.3, cell.initial_state(params, ()))
    options = dict(
        lengths=lengths, resets=resets, reset_state=reset_state, reverse=True, return_states=True, remat=True
    )

    def loss(p, backend):
        final, ys, states = rx.scan(cell, p, xs, backend=backend, **options)
        return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves((final, states)))

    for backend in ("stack", "sequential"):
        hlo = jax.jit(lambda p, b=backend: rx.scan(cell, p, xs, backend=b, **options)).lower(params).as_text()
        if jax.default_backend() == "cpu":
            assert ("recurrax_lstm_forward" in hlo) == (backend == "stack")
    got, want = (jax.value_and_grad(loss)(params, b) for b in ("stack", "sequential"))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
