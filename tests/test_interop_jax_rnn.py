"""``jax.experimental.rnn``'s flat LSTM weights both ways, checked against its CPU reference ``lstm_ref``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import recurrax as rx
from recurrax.interop import from_jax_rnn, to_jax_rnn

I, H, B, T = 3, 4, 3, 5
LENGTHS = np.array([T, 2, 4], np.int32)


def _reference(weights, xs, h0, c0, num_layers, bidirectional):
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, I, H, num_layers, bidirectional)
    return rnn.lstm_ref(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, jnp.asarray(LENGTHS), I, H, num_layers, 0.0, bidirectional)


def _finals(final, num_layers, bidirectional):
    """recurrax's final state as ``lstm_ref``'s ``(L * D, B, H)`` pair."""
    layers = final if num_layers > 1 else (final,)
    units = [u for layer in layers for u in ((layer.forward, layer.backward) if bidirectional else (layer,))]
    return jnp.stack([u.h for u in units]), jnp.stack([u.c for u in units])


def _initial(layer_count, bidirectional, h0, c0):
    dirs = 2 if bidirectional else 1
    units = [rx.LSTMState(h0[i], c0[i]) for i in range(layer_count * dirs)]
    pairs = [rx.BidirectionalState(*units[2 * i : 2 * i + 2]) if dirs == 2 else units[i] for i in range(layer_count)]
    return tuple(pairs) if layer_count > 1 else pairs[0]


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
def test_from_jax_rnn_computes_lstm_ref_and_round_trips(num_layers, bidirectional):
    dirs = 2 if bidirectional else 1
    keys = jax.random.split(jax.random.key(0), 4)
    weights = rnn.init_lstm_weight(keys[0], I, H, num_layers, bidirectional)
    xs = jax.random.normal(keys[1], (B, T, I))
    h0 = jax.random.normal(keys[2], (num_layers * dirs, B, H))
    c0 = jax.random.normal(keys[3], (num_layers * dirs, B, H))
    want_ys, want_h, want_c = _reference(weights, xs, h0, c0, num_layers, bidirectional)

    model, params = from_jax_rnn(weights, I, H, num_layers, bidirectional)
    state = _initial(num_layers, bidirectional, h0, c0)
    if isinstance(model, rx.Cell):
        final, ys = rx.scan(model, params, xs, state, lengths=jnp.asarray(LENGTHS))
    else:
        final, ys = model.apply(params, xs, state, lengths=jnp.asarray(LENGTHS))
    valid = (np.arange(T)[None, :] < LENGTHS[:, None])[..., None]
    np.testing.assert_allclose(np.where(valid, ys, 0), np.where(valid, want_ys, 0), rtol=1e-6, atol=1e-6)
    got_h, got_c = _finals(final, num_layers, bidirectional)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_c, want_c, rtol=1e-6, atol=1e-6)

    flat = to_jax_rnn(model, params)
    assert (flat.input_size, flat.hidden_size, flat.num_layers, flat.bidirectional) == (I, H, num_layers, bidirectional)
    assert flat.weights.shape == weights.shape
    again = _reference(jnp.asarray(flat.weights), xs, h0, c0, num_layers, bidirectional)
    for g, w in zip(again, (want_ys, want_h, want_c)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    # recurrax -> flat -> recurrax is exact: its one bias goes to b_ih, zeros to b_hh.
    _, back = from_jax_rnn(flat.weights, I, H, num_layers, bidirectional)
    jax.tree.map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: rx.gru(H), "runs only the LSTM"),
        (lambda: rx.lstm(H, proj_size=2), "proj_size"),
        (lambda: rx.lstm(H, use_bias=False), "use_bias"),
        (lambda: rx.lstm(H, peephole=True), "peephole"),
        (lambda: rx.stacked([rx.lstm(H), rx.lstm(H)], dropout=0.5), "dropout"),
    ],
)
def test_what_the_flat_layout_cannot_hold_is_refused_by_name(make, match):
    model = make()
    with pytest.raises(ValueError, match=match):
        to_jax_rnn(model, model.init(jax.random.key(0), I))


def test_a_weight_vector_of_the_wrong_length_is_refused():
    weights = rnn.init_lstm_weight(jax.random.key(0), I, H, 1, False)
    with pytest.raises(ValueError, match=r"`weights` must be a flat vector of \d+ values"):
        from_jax_rnn(weights[:-1], I, H)
    with pytest.raises(ValueError, match="`num_layers`"):
        from_jax_rnn(weights, I, H, 0)
