"""recurrax.interop.keras against Keras 3 itself (JAX backend): whole layers in and out, SimpleRNN with every
activation the table names, Bidirectional with every merge, and the refusals.

The reference is the Keras layer's own call on the same inputs; skipped where Keras is not installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax.interop import keras as rx_keras

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip(f"Keras runs the {keras.backend.backend()!r} backend here, not 'jax'", allow_module_level=True)

# Keras's JAX variables warn about NumPy 2's copy keyword; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

B, T, I, H = 3, 6, 5, 4
XS = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
TOL = {"atol": 1e-6, "rtol": 1e-6}


def _built(layer, seed=0):
    """``layer`` built on ``XS`` with random weights everywhere (biases too, so their layout matters)."""
    layer(XS)
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.normal(size=w.shape) * 0.5).astype(w.dtype) for w in layer.get_weights()])
    return layer


def _keras_run(layer, xs=XS):
    """Keras's outputs and final states as NumPy arrays."""
    out = layer(xs)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def _state_leaves(state):
    """A recurrax state in Keras's order: ``[h]`` or ``[h, c]``."""
    return [state.h, state.c] if hasattr(state, "c") else [state.h]


LAYERS = {
    "lstm": lambda **kw: keras.layers.LSTM(H, **kw),
    "lstm-no-bias": lambda **kw: keras.layers.LSTM(H, use_bias=False, **kw),
    "gru": lambda **kw: keras.layers.GRU(H, **kw),
    "gru-reset-before": lambda **kw: keras.layers.GRU(H, reset_after=False, **kw),
    "simple_rnn": lambda **kw: keras.layers.SimpleRNN(H, **kw),
    "simple_rnn-relu-no-bias": lambda **kw: keras.layers.SimpleRNN(H, activation="relu", use_bias=False, **kw),
    # Keras's other activations are the cells' `activation` / `gate_activation` (run on the generic loop).
    "lstm-hard_sigmoid-softsign": lambda **kw: keras.layers.LSTM(
        H, recurrent_activation="hard_sigmoid", activation="softsign", **kw
    ),
    "gru-reset-before-relu": lambda **kw: keras.layers.GRU(
        H, reset_after=False, recurrent_activation="hard_sigmoid", activation="relu", **kw
    ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_from_keras_computes_the_layer(name):
    layer = _built(LAYERS[name](return_sequences=True, return_state=True))
    cell, params = rx_keras.from_keras(layer)
    final, ys = rx.scan(cell, params, XS)
    want = _keras_run(layer)
    chex.assert_trees_all_close([ys, *_state_leaves(final)], want, **TOL)


@pytest.mark.parametrize("name", list(LAYERS))
def test_to_keras_builds_the_layer_and_round_trips_bit_for_bit(name):
    cell, params = rx_keras.from_keras(_built(LAYERS[name]()))
    params = jax.tree.map(lambda p: p + 0.1, params)  # not Keras's numbers: the export must carry them
    layer = rx_keras.to_keras(cell, params, return_state=True)
    final, ys = rx.scan(cell, params, XS)
    chex.assert_trees_all_close(_keras_run(layer), [ys, *_state_leaves(final)], **TOL)
    again_cell, again = rx_keras.from_keras(layer)
    assert again_cell == cell
    chex.assert_trees_all_equal(again, params)


@pytest.mark.parametrize("activation", sorted(rx_keras.ACTIVATIONS))
def test_simple_rnn_activations_are_keras_s(activation):
    layer = _built(keras.layers.SimpleRNN(H, activation=activation, return_sequences=True))
    cell, params = rx_keras.from_keras(layer)
    chex.assert_trees_all_close(rx.scan(cell, params, XS)[1], _keras_run(layer)[0], **TOL)
    assert rx_keras.to_keras(cell, params).get_config()["activation"] == activation


@pytest.mark.parametrize(
    ("kind", "merge"),
    [("lstm", "concat"), ("lstm", "sum"), ("lstm", "mul"), ("lstm", "ave"), ("gru", "concat"), ("simple_rnn", "ave")],
)
def test_bidirectional_both_ways(kind, merge):
    inner = LAYERS[kind](return_sequences=True, return_state=True)
    layer = _built(keras.layers.Bidirectional(inner, merge_mode=merge))
    bi, params = rx_keras.from_keras(layer)
    final, ys = bi.apply(params, XS)
    want = _keras_run(layer)  # [ys, forward states..., backward states...]
    chex.assert_trees_all_close([ys, *_state_leaves(final.forward), *_state_leaves(final.backward)], want, **TOL)

    # The weight lists and the rebuilt layer agree with both.
    weights = layer.get_weights()
    options = {"reset_after": True} if kind == "gru" else {}
    keras_name = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}[kind]
    listed, listed_params = rx_keras.from_keras_bidirectional(weights, keras_name, merge_mode=merge, **options)
    assert listed == bi
    chex.assert_trees_all_equal(listed_params, params)
    back = rx_keras.to_keras_bidirectional(params)
    # The GRU's r/z biases are re-split (summed into the input row); the kernels come back as they were.
    if kind == "gru":
        chex.assert_trees_all_equal([back[i] for i in (0, 1, 3, 4)], [weights[i] for i in (0, 1, 3, 4)])
    else:
        chex.assert_trees_all_equal(back, weights)
    rebuilt = rx_keras.to_keras(bi, params)
    chex.assert_trees_all_close(_keras_run(rebuilt)[0], ys, **TOL)
    assert rebuilt.merge_mode == merge


def test_bidirectional_without_merge_returns_both_directions_as_keras_does():
    inner = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    layer = _built(keras.layers.Bidirectional(inner, merge_mode=None))
    bi, params = rx_keras.from_keras(layer)
    assert bi == rx.bidirectional(rx.lstm(H, forget_bias=0.0), rx.lstm(H, forget_bias=0.0), merge=None)
    final, (ys_f, ys_b) = bi.apply(params, XS)
    want = _keras_run(layer)  # [forward ys, backward ys (in input order), forward states..., backward states...]
    got = [ys_f, ys_b, *_state_leaves(final.forward), *_state_leaves(final.backward)]
    chex.assert_trees_all_close(got, want, **TOL)
    rebuilt = rx_keras.to_keras(bi, params)
    assert rebuilt.merge_mode is None
    chex.assert_trees_all_close(_keras_run(rebuilt), [ys_f, ys_b], **TOL)
    listed, _ = rx_keras.from_keras_bidirectional(layer.get_weights(), "LSTM", merge_mode=None)
    assert listed == bi


MASK = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)  # holes, left and right pads


@pytest.mark.parametrize("zero_output", [False, True], ids=["carried-outputs", "zero-outputs"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_masks_compute_what_keras_computes(kind, zero_output):
    """``scan(mask=)`` against Keras given the same mask: ``masked_outputs="state"`` is Keras's default
    ``zero_output_for_mask=False``, ``"zeros"`` its ``True``; from a non-zero initial state."""
    make = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    layer = _built(make(H, return_sequences=True, return_state=True, zero_output_for_mask=zero_output))
    cell, params = rx_keras.from_keras(layer)
    state = jax.tree.map(lambda s: 0.3 * jnp.ones_like(s), cell.initial_state(params, (B,)))
    keras_state = _state_leaves(state)
    want = [np.asarray(o) for o in layer(XS, mask=MASK, initial_state=keras_state)]
    masked_outputs = "zeros" if zero_output else "state"
    final, ys = rx.scan(cell, params, XS, state, mask=MASK, masked_outputs=masked_outputs)
    chex.assert_trees_all_close([ys, *_state_leaves(final)], want, **TOL)


def test_bidirectional_and_stacked_layers_take_masks_as_keras_does():
    """A mask through ``bidirectional`` (the backward direction from each sequence's last kept step) equals Keras's
    ``Bidirectional`` given the same mask, with zeros at masked steps (``zero_output_for_mask=True``)."""
    inner = keras.layers.GRU(H, return_sequences=True, zero_output_for_mask=True)
    layer = _built(keras.layers.Bidirectional(inner))
    bi, params = rx_keras.from_keras(layer)
    want = np.asarray(layer(XS, mask=MASK))
    chex.assert_trees_all_close(rx.scan(bi, params, XS, mask=MASK)[1], want, **TOL)
    stack = rx.stacked([bi, rx.lstm(H)])
    stack_params = (params, rx.lstm(H).init(jax.random.key(0), 2 * H))
    _, ys = stack.apply(stack_params, XS, mask=MASK)
    _, top = rx.scan(rx.lstm(H), stack_params[1], bi.apply(params, XS, mask=MASK)[1], mask=MASK)
    chex.assert_trees_all_close(ys, top, **TOL)


def test_dropout_converts_to_recurrent_dropout_and_back():
    """Keras's ``dropout`` / ``recurrent_dropout`` are ``RecurrentDropout(input, recurrent)``: inference (no key)
    equals the Keras layer's call, a key drops units, and ``to_keras`` sets the same rates."""
    layer = _built(keras.layers.GRU(H, dropout=0.25, recurrent_dropout=0.1, return_sequences=True))
    converted, params = rx_keras.from_keras(layer)
    rates = rx.RecurrentDropout(input=0.25, recurrent=0.1)
    assert converted == rx.as_layer(rx.gru(H, reset_after=True), dropout=rates)
    chex.assert_trees_all_close(rx.scan(converted, params, XS)[1], _keras_run(layer)[0], **TOL)
    assert not np.allclose(rx.scan(converted, params, XS, key=jax.random.key(0))[1], _keras_run(layer)[0])
    back = rx_keras.to_keras(converted, params)
    assert (back.dropout, back.recurrent_dropout) == (0.25, 0.1)
    bi = _built(keras.layers.Bidirectional(keras.layers.LSTM(H, dropout=0.5, return_sequences=True)))
    bi_layer, bi_params = rx_keras.from_keras(bi)
    chex.assert_trees_all_close(bi_layer.apply(bi_params, XS)[1], _keras_run(bi)[0], **TOL)
    assert rx_keras.to_keras(bi_layer, bi_params).forward_layer.dropout == 0.5
    zoneout = rx.as_layer(rx.lstm(H), dropout=rx.RecurrentDropout(zoneout_h=0.1))
    with pytest.raises(ValueError, match="Keras's recurrent layers have no zoneout"):
        rx_keras.to_keras(zoneout, rx.lstm(H).init(jax.random.key(0), I))


def test_the_weight_list_functions_accept_the_layer_object():
    layer = _built(keras.layers.GRU(H, reset_after=False))
    cell, params = rx_keras.from_keras_gru(layer)
    assert (cell, params.keys()) == (rx_keras.from_keras(layer)[0], {"w_i", "w_h", "b"})
    with pytest.raises(ValueError, match=r"`reset_after=True` was given, but the layer has `reset_after=False`"):
        rx_keras.from_keras_gru(layer, reset_after=True)
    with pytest.raises(TypeError, match=r"from_keras_lstm: expected a keras.layers.LSTM, got a GRU"):
        rx_keras.from_keras_lstm(layer)


def _refusals():
    lstm = _built(keras.layers.LSTM(H))
    return {
        "a dense layer": (lambda: rx_keras.from_keras(keras.layers.Dense(3)), TypeError, "Dense has no recurrax"),
        "not a keras layer": (lambda: rx_keras.from_keras(object()), TypeError, "expected a Keras layer"),
        "unbuilt": (lambda: rx_keras.from_keras(keras.layers.LSTM(H)), ValueError, "no weights yet"),
        "go_backwards": (
            lambda: rx_keras.from_keras(_built(keras.layers.LSTM(H, go_backwards=True))),
            ValueError,
            "go_backwards=True",
        ),
        "unknown gate activation": (
            lambda: rx_keras.from_keras(_built(keras.layers.LSTM(H, recurrent_activation="exponential"))),
            ValueError,
            "recurrent_activation='exponential'",
        ),
        "unknown simple activation": (
            lambda: rx_keras.from_keras(_built(keras.layers.SimpleRNN(H, activation="exponential"))),
            ValueError,
            "activation='exponential'",
        ),
        "mixed precision": (
            lambda: rx_keras.from_keras(_built(keras.layers.LSTM(H, dtype="mixed_float16"))),
            ValueError,
            "mixed dtype policy",
        ),
        "odd bidirectional list": (
            lambda: rx_keras.from_keras_bidirectional(lstm.get_weights(), "LSTM"),
            ValueError,
            "3 array",
        ),
        "unknown wrapped layer": (
            lambda: rx_keras.from_keras_bidirectional(lstm.get_weights() * 2, "ConvLSTM2D"),
            ValueError,
            "`layer` must be one of",
        ),
    }


def _export_refusals():
    key = jax.random.key(0)

    def to(cell, **kw):
        return lambda: rx_keras.to_keras(cell, cell.init(key, I), **kw)

    return {
        "peephole": (to(rx.lstm(H, peephole=True)), "`peephole=True`"),
        "projection": (to(rx.lstm(H, proj_size=2)), "`proj_size=2`"),
        "layer norm": (to(rx.lstm(H, layer_norm=True)), "`layer_norm=True`"),
        "cell clip": (to(rx.lstm(H, cell_clip=3.0)), "`cell_clip=3.0`"),
        "compute dtype": (to(rx.gru(H, dtype=jnp.bfloat16)), "compute `dtype=bfloat16`"),
        "residual": (to(rx.elman(H, residual=True)), "`residual=True`"),
        "other activation": (to(rx.elman(H, activation=lambda a: a**3)), "named activation"),
        "other gate activation": (
            to(rx.lstm(H, gate_activation=lambda a: a**3)),
            "`recurrent_activation` is a named activation, but the lstm cell has `gate_activation=<lambda>`",
        ),
        "a decided activation": (to(rx.gru(H), recurrent_activation="relu"), "`recurrent_activation` is decided"),
        "mgu": (to(rx.mgu(H)), "no equivalent of the mgu"),
        "replaced function": (to(rx.gru(H)._replace(transition=rx.gru(H).transition)), "no function replaced"),
        "a stack": (to(rx.stacked([rx.gru(H), rx.gru(H)])), "layer by layer"),
        "a decided option": (to(rx.gru(H), units=8), "`units` is decided"),
        "a callable merge": (to(rx.bidirectional(rx.gru(H), rx.gru(H), merge=jnp.maximum)), "merges with one of"),
        "two kinds": (to(rx.bidirectional(rx.gru(H), rx.lstm(H))), "two layers of one kind"),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_what_keras_has_and_recurrax_lacks_is_refused_by_name(case):
    call, error, message = _refusals()[case]
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("case", list(_export_refusals()))
def test_what_recurrax_has_and_keras_lacks_is_refused_by_name(case):
    call, message = _export_refusals()[case]
    with pytest.raises(ValueError, match=message):
        call()
