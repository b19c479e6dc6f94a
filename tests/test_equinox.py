"""Equinox: exact conversion of eqx.nn.LSTMCell/GRUCell both ways, and recurrax.equinox.RNN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax as rx
from recurrax.interop import from_equinox, to_equinox

eqx = pytest.importorskip("equinox")
from recurrax.equinox import RNN  # noqa: E402  (needs equinox)

B, T, I, H = 3, 6, 4, 5
TOL = dict(atol=1e-6, rtol=1e-6)
CLASSES = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}


def _hidden(kind, key, batch=()):
    kh, kc = jax.random.split(key)
    h = jax.random.normal(kh, (*batch, H))
    return (h, jax.random.normal(kc, (*batch, H))) if kind == "lstm" else h


def _to_rx(kind, hidden):
    return rx.LSTMState(*hidden) if kind == "lstm" else rx.RNNState(hidden)


def _from_rx(kind, state):
    return (state.h, state.c) if kind == "lstm" else state.h


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_from_equinox_step_and_scan(kind, use_bias):
    module = CLASSES[kind](I, H, use_bias=use_bias, key=jax.random.key(0))
    cell, params = from_equinox(module)
    assert cell == (rx.lstm(H, forget_bias=0.0, use_bias=use_bias) if kind == "lstm" else rx.gru(H, use_bias=use_bias))
    x = jax.random.normal(jax.random.key(1), (I,))
    hidden = _hidden(kind, jax.random.key(2))
    for got, want in zip(
        jax.tree.leaves(_from_rx(kind, cell.step(params, _to_rx(kind, hidden), x))), jax.tree.leaves(module(x, hidden))
    ):
        np.testing.assert_allclose(got, want, **TOL)
    if not use_bias:
        return  # the step covers the bias-free path; one scan per kind keeps the file fast

    xs = jax.random.normal(jax.random.key(3), (B, T, I))
    hidden0 = _hidden(kind, jax.random.key(4), (B,))
    final, ys = jax.jit(rx.scan)(cell, params, xs, _to_rx(kind, hidden0))

    @jax.jit
    def loop(xs, carry):
        outputs = []
        for t in range(T):
            carry = jax.vmap(module)(xs[:, t], carry)
            outputs.append(carry[0] if kind == "lstm" else carry)
        return carry, jnp.stack(outputs, axis=1)

    carry, want_ys = loop(xs, hidden0)
    np.testing.assert_allclose(ys, want_ys, **TOL)
    for got, want in zip(jax.tree.leaves(_from_rx(kind, final)), jax.tree.leaves(carry)):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_round_trip_is_exact(kind, use_bias):
    cell = (
        rx.lstm(H, use_bias=use_bias, chrono_t_max=10.0 if use_bias else None)
        if kind == "lstm"
        else rx.gru(H, use_bias=use_bias)
    )
    params = cell.init(jax.random.key(5), I)
    module = to_equinox(cell, params)
    assert isinstance(module, CLASSES[kind]) and module.use_bias == use_bias
    _, params2 = from_equinox(module)
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    # The same computation, not only the same numbers: the module steps as the original cell.
    x, hidden = jnp.ones((I,)), _hidden(kind, jax.random.key(6))
    got = jax.tree.leaves(module(x, hidden))
    want = jax.tree.leaves(_from_rx(kind, cell.step(params, _to_rx(kind, hidden), x)))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL)


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        (rx.lstm(H, peephole=True), "peephole=True"),
        (rx.lstm(H, layer_norm=True), "layer_norm=True"),
        (rx.lstm(H, proj_size=3), "proj_size=3"),
        (rx.lstm(H, cell_clip=3.0), "cell_clip=3.0"),
        (rx.lstm(H, dtype=jnp.bfloat16), "dtype=bfloat16"),
        (rx.gru(H, reset_after=False), "reset_after=False"),
        (rx.gru(H, gate_activation=jax.nn.hard_sigmoid), "`gate_activation=hard_sigmoid`"),
        (rx.lstm(H, activation=jax.nn.relu), "`activation=relu`"),
        (rx.elman(H), "`elman` cell"),
        (rx.mgu(H), "`mgu` cell"),
    ],
)
def test_to_equinox_refuses_by_name(cell, match):
    with pytest.raises(ValueError, match=match):
        to_equinox(cell, cell.init(jax.random.key(0), I))


def test_to_equinox_refuses_replaced_functions_layers_and_mismatched_params():
    cell = rx.gru(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="cannot tell"):
        to_equinox(cell._replace(transition=lambda p, s, z: cell.transition(p, s, z)), params)
    with pytest.raises(TypeError, match="single-step cells only"):
        to_equinox(rx.stacked([cell, cell]), (params, params))
    # use_bias mismatch: a use_bias=False cell given params with biases.
    with pytest.raises(ValueError, match="do not fit"):
        to_equinox(rx.gru(H, use_bias=False), params)
    with pytest.raises(ValueError, match="do not fit"):
        to_equinox(cell, {k: v for k, v in params.items() if k != "b_hn"})


def test_float64_without_x64_is_refused():
    assert not jax.config.jax_enable_x64
    module = eqx.nn.GRUCell(I, H, key=jax.random.key(0))
    as64 = jax.tree.map(lambda a: np.asarray(a, np.float64), module)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        from_equinox(as64)
    cell = rx.lstm(H)
    params = {k: np.asarray(v, np.float64) for k, v in cell.init(jax.random.key(0), I).items()}
    with pytest.raises(ValueError, match="jax_enable_x64"):
        to_equinox(cell, params)


def test_from_equinox_refuses_other_modules():
    with pytest.raises(TypeError, match=r"LSTMCell or equinox\.nn\.GRUCell"):
        from_equinox(eqx.nn.Linear(I, H, key=jax.random.key(0)))

    class Custom(eqx.nn.LSTMCell):
        def __call__(self, input, hidden, *, key=None):
            return hidden

    with pytest.raises(ValueError, match="overrides `__call__`"):
        from_equinox(Custom(I, H, key=jax.random.key(0)))


@pytest.mark.parametrize("layer", [False, True])
def test_rnn_module_matches_scan_and_jits(layer):
    cell = rx.gru(H)
    model = rx.stacked([cell, rx.lstm(H)]) if layer else cell
    rnn = RNN(model, I, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    lengths = jnp.array([6, 3, 1])
    if layer:
        want = jax.jit(lambda p, xs: model.apply(p, xs, lengths=lengths))(rnn.params, xs)
    else:
        want = jax.jit(lambda p, xs: rx.scan(cell, p, xs, lengths=lengths))(rnn.params, xs)
    got = eqx.filter_jit(lambda m, xs: m(xs, lengths=lengths))(rnn, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, **TOL)
    if not layer:
        # Unbatched under jax.vmap, Equinox's convention.
        ys = jax.vmap(lambda x, n: rnn(x, lengths=n)[1])(xs, lengths)
        np.testing.assert_allclose(ys, want[1], **TOL)


def test_rnn_module_trains_and_its_gradients_are_scans():
    cell = rx.lstm(H)
    rnn = RNN(cell, I, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    target = jax.random.normal(jax.random.key(2), (B, T, H)) * 0.3

    def loss(model, xs):
        return jnp.mean((model(xs)[1] - target) ** 2)

    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    value, grads = value_and_grad(rnn, xs)
    want = jax.jit(jax.grad(lambda p: jnp.mean((rx.scan(cell, p, xs)[1] - target) ** 2)))(rnn.params)
    for g, w in zip(jax.tree.leaves(grads.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5)

    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(rnn, eqx.is_array))
    updates, _ = optimizer.update(grads, opt_state, eqx.filter(rnn, eqx.is_array))
    trained = eqx.apply_updates(rnn, updates)
    # A module rebuilt with new params reuses the compiled function: the cell is static and equal.
    assert value_and_grad(trained, xs)[0] < value
