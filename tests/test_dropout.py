"""Dropout inside the recurrence (``as_layer(cell, dropout=RecurrentDropout(...))``).

Checked on cells chosen so the masks can be read off the outputs exactly: a linear Elman cell with identity
weights passes its (masked) input or state straight through. Variational masks must be the same at every step,
zoneout's fresh at each; rates are checked statistically, expectations against the cell without dropout, and
evaluation (no key) against the plain cell or, for zoneout, its expectation written as a loop.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
import reference
from recurrax.flax import linen as rx_linen

B, T, F = 64, 5, 6
XS = 1.0 + jax.random.uniform(jax.random.key(0), (B, T, F))  # positive: a dropped unit is an exact zero


def _identity_elman(w_i: float, w_h: float) -> tuple[rx.Cell, dict]:
    """``h' = w_i x + w_h h`` per unit (linear, no bias): a mask on x or h shows in the outputs as it is."""
    cell = rx.elman(F, activation=lambda a: a, use_bias=False)
    return cell, {"w_i": w_i * jnp.eye(F), "w_h": w_h * jnp.eye(F)}


def _run(cell, params, dropout, key=None, state=None, xs=XS):
    return rx.as_layer(cell, dropout=dropout).apply(params, xs, state, key=key)


def test_input_mask_is_one_per_sequence_and_inverted():
    cell, params = _identity_elman(1.0, 0.0)  # h_t = mask * x_t / (1 - p)
    _, ys = _run(cell, params, rx.RecurrentDropout(input=0.25), jax.random.key(1))
    kept = np.asarray(ys) != 0
    assert (kept == kept[:, :1]).all()  # the same units at every step
    np.testing.assert_allclose(np.where(kept, ys, 0), np.where(kept, XS / 0.75, 0), rtol=1e-6)
    assert abs(1 - kept[:, 0].mean() - 0.25) < 0.05
    # Without a key: the plain cell, exactly.
    chex.assert_trees_all_equal(_run(cell, params, rx.RecurrentDropout(input=0.25)), rx.scan(cell, params, XS))


def test_recurrent_mask_is_one_per_sequence():
    cell, params = _identity_elman(0.0, 1.0)  # h_t = (mask / (1 - p))^t h_0
    h0 = rx.RNNState(jnp.ones((B, F)))
    _, ys = _run(cell, params, rx.RecurrentDropout(recurrent=0.5), jax.random.key(2), state=h0)
    kept = np.asarray(ys[:, 0]) != 0
    want = np.where(kept[:, None, :], 2.0 ** np.arange(1, T + 1)[None, :, None], 0.0)
    np.testing.assert_allclose(ys, want, rtol=1e-6)
    assert abs(kept.mean() - 0.5) < 0.08


def test_zoneout_masks_are_fresh_at_each_step_and_evaluation_takes_the_expectation():
    cell, params = _identity_elman(1.0, 0.0)  # the new h is x_t; zoneout keeps the previous h instead
    _, ys = _run(cell, params, rx.RecurrentDropout(zoneout_h=0.3), jax.random.key(3))
    ys, xs = np.asarray(ys), np.asarray(XS)
    previous = np.concatenate([np.zeros((B, 1, F)), ys[:, :-1]], axis=1)
    zoned = ys == previous
    assert ((ys == xs) | zoned).all()
    assert abs(zoned.mean() - 0.3) < 0.05
    assert 0 < np.mean(zoned[:, 1:] != zoned[:, :1]) < 1  # not one mask for all steps
    _, expected = _run(cell, params, rx.RecurrentDropout(zoneout_h=0.3))
    want, h = [], np.zeros((B, F))
    for t in range(T):
        h = 0.3 * h + 0.7 * xs[:, t]
        want.append(h)
    np.testing.assert_allclose(expected, np.stack(want, 1), rtol=1e-6)


def test_lstm_zoneout_of_h_and_c_in_evaluation_equals_the_expectation_loop():
    cell = rx.lstm(F)
    params = cell.init(jax.random.key(4), F)
    dropout = rx.RecurrentDropout(zoneout_h=0.2, zoneout_c=0.6)
    final, ys = jax.jit(lambda p, x: _run(cell, p, dropout, xs=x))(params, XS[:4])
    state = cell.initial_state(params, (4,))
    want = []
    for t in range(T):
        new = cell.step(params, state, XS[:4, t])
        state = rx.LSTMState(h=0.2 * state.h + 0.8 * new.h, c=0.6 * state.c + 0.4 * new.c)
        want.append(state.h)
    chex.assert_trees_all_close((final, ys), (state, jnp.stack(want, 1)), atol=1e-6, rtol=1e-6)


MASKED = {
    "gru": (lambda: rx.gru(F), reference.gru),
    "gru_reset_before": (lambda: rx.gru(F, reset_after=False), functools.partial(reference.gru, reset_after=False)),
    "mgu": (lambda: rx.mgu(F), reference.mgu),
    "elman_residual": (lambda: rx.elman(F, residual=True), None),
}


@pytest.mark.parametrize("name", list(MASKED))
def test_recurrent_dropout_masks_h_in_the_matmuls_only(name):
    """The declared masked transition against the equations in NumPy: ``h * mask`` in the recurrent matmuls, the
    unmasked ``h`` in the GRU's and MGU's update (and an Elman cell's residual)."""
    make, numpy_step = MASKED[name]
    cell = make()
    params = cell.init(jax.random.key(11), F)
    k_h, k_x, k_m = jax.random.split(jax.random.key(12), 3)
    state = rx.RNNState(jax.random.normal(k_h, (3, F)))
    x = jax.random.normal(k_x, (3, F))
    mask = 2.0 * jax.random.bernoulli(k_m, 0.5, (3, F))
    got = cell.structure.masked(params, state, cell.project(params, x), mask)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h, xn, m = (np.asarray(a, np.float64) for a in (state.h, x, mask))
    if numpy_step is None:  # h' = tanh(x W_i + b + (h m) W_h + h)
        want = np.tanh(xn @ p["w_i"] + p["b"] + (h * m) @ p["w_h"] + h)
    else:
        (want,) = numpy_step(p, (h,), xn, h_mask=m)
    np.testing.assert_allclose(got.h, want, atol=1e-5, rtol=1e-5)
    assert not np.allclose(got.h, cell.step(params, state, x).h, atol=1e-3)  # the mask matters
    _, ys = _run(cell, params, rx.RecurrentDropout(recurrent=0.5), jax.random.key(13), xs=XS[:3])
    assert bool(jnp.isfinite(ys).all()) and not np.allclose(ys, rx.scan(cell, params, XS[:3])[1])


def test_input_dropout_is_unbiased_and_keeps_the_fast_backend():
    """Averaged over masks, a linear cell with input dropout computes the cell without it; input dropout alone
    changes only ``xs``, so a named fast backend still runs the call."""
    cell, params = _identity_elman(0.5, 0.5)
    keys = jax.random.split(jax.random.key(5), 4000)
    mean = jax.vmap(lambda k: _run(cell, params, rx.RecurrentDropout(input=0.5), k, xs=XS[:2])[1])(keys).mean(0)
    np.testing.assert_allclose(mean, rx.scan(cell, params, XS[:2])[1], rtol=0.05)
    lstm = rx.lstm(F)
    lstm_params = lstm.init(jax.random.key(6), F)
    fast = rx.as_layer(lstm, dropout=rx.RecurrentDropout(input=0.3), backend="xla_lstm")
    slow = rx.as_layer(lstm, dropout=rx.RecurrentDropout(input=0.3), backend="sequential")
    key = jax.random.key(7)
    chex.assert_trees_all_close(fast.apply(lstm_params, XS, key=key), slow.apply(lstm_params, XS, key=key), atol=1e-5)
    recurrent = rx.as_layer(lstm, dropout=rx.RecurrentDropout(recurrent=0.3), backend="xla_lstm")
    with pytest.raises(ValueError, match=r"recurrent dropout and zoneout.*'sequential' or 'newton', not 'xla_lstm'"):
        recurrent.apply(lstm_params, XS, key=key)


def test_gradients_flow_through_dropout_and_the_flax_adapter_draws_from_the_dropout_stream():
    cell = rx.lstm(F)
    dropout = rx.RecurrentDropout(input=0.2, recurrent=0.2, zoneout_h=0.1, zoneout_c=0.1)
    layer = rx.as_layer(cell, dropout=dropout)
    params = cell.init(jax.random.key(8), F)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, XS[:4], key=jax.random.key(9))[1] ** 2))(params)
    assert all(bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))

    module = rx_linen.RNN(layer)
    variables = module.init(jax.random.key(10), XS[:4])
    run = lambda seed: module.apply(variables, XS[:4], deterministic=False, rngs={"dropout": jax.random.key(seed)})  # noqa: E731
    assert not np.allclose(run(0), run(1))
    np.testing.assert_array_equal(run(0), run(0))
    # Evaluation: no masks; zoneout's expectation remains, as without the adapter.
    evaluation = module.apply(variables, XS[:4], deterministic=True)
    np.testing.assert_allclose(evaluation, layer.apply(variables["params"]["cell"], XS[:4])[1], atol=1e-6)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: rx.as_layer(rx.lstm(F), dropout=rx.RecurrentDropout(input=1.0)),
            ValueError,
            r"`dropout.input`.*\[0, 1\)",
        ),
        (
            lambda: rx.as_layer(rx.lstm(F), dropout=rx.RecurrentDropout(zoneout_h=-0.1)),
            ValueError,
            "`dropout.zoneout_h`",
        ),
        (
            lambda: rx.as_layer(rx.min_gru(F), dropout=rx.RecurrentDropout(recurrent=0.1)),
            ValueError,
            "the min_gru cell does not declare",
        ),
        (lambda: rx.as_layer(rx.lstm(F), dropout=0.1), TypeError, r"must be a recurrax\.RecurrentDropout"),
        (
            lambda: rx.as_layer(rx.stacked([rx.lstm(F)]), dropout=rx.RecurrentDropout(input=0.1)),
            ValueError,
            "applies inside one cell's recurrence",
        ),
    ],
    ids=["rate 1", "negative", "min_gru recurrent", "a float", "a layer"],
)
def test_bad_dropout_is_refused_by_name(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_zoneout_of_a_field_the_state_lacks_is_refused():
    layer = rx.as_layer(rx.gru(F), dropout=rx.RecurrentDropout(zoneout_c=0.1))
    with pytest.raises(ValueError, match=r"`dropout.zoneout_c` needs a state field `c`.*\['h'\]"):
        layer.apply(rx.gru(F).init(jax.random.key(0), F), XS)


def test_the_one_step_form_of_a_zoneout_layer_is_its_evaluation():
    """``as_cell`` of a layer with zoneout steps its expectation, as the layer computes without a key."""
    layer = rx.as_layer(rx.lstm(F), dropout=rx.RecurrentDropout(input=0.3, zoneout_h=0.2, zoneout_c=0.6))
    params = layer.init(jax.random.key(14), F)
    want = layer.apply(params, XS[:3])
    chex.assert_trees_all_close(rx.scan(rx.as_cell(layer), params, XS[:3]), want, atol=1e-6, rtol=1e-6)
    assert not np.allclose(rx.scan(rx.lstm(F), params, XS[:3])[1], want[1], atol=1e-3)  # zoneout matters
