"""Bad input raises a ValueError/TypeError at trace time naming the argument, the expected and the received value."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from reference import random_params

B, T, I, H = 2, 4, 3, 5
LSTM = rx.lstm(H)
P_LSTM = random_params(LSTM, 0, I)
GRU = rx.gru(H)
P_GRU = random_params(GRU, 0, I)
XS = jnp.ones((B, T, I))


def _m(*parts: str) -> str:
    """A regex matching ``parts`` in order, anything in between."""
    return ".*".join(re.escape(p) for p in parts)


# ------------------------------------------------------------------------------------------ inputs


def test_wrong_input_size():
    with pytest.raises(ValueError, match=_m("`x`", f"(..., {I})", "(2, 4, 7)")):
        rx.scan(LSTM, P_LSTM, jnp.ones((B, T, 7)))
    with pytest.raises(ValueError, match=_m("`x`", f"(..., {I})", "(2, 7)")):
        LSTM.step(P_LSTM, LSTM.initial_state(P_LSTM, (B,)), jnp.ones((B, 7)))


def test_integer_inputs():
    with pytest.raises(TypeError, match=_m("`x`", "floating-point", "int32")):
        rx.scan(GRU, P_GRU, jnp.ones((B, T, I), jnp.int32))
    with pytest.raises(TypeError, match=_m("`x`", "floating-point", "int32")):
        GRU.step(P_GRU, GRU.initial_state(P_GRU, (B,)), jnp.ones((B, I), jnp.int32))


@pytest.mark.parametrize("shape", [(I,), ()])
def test_xs_needs_a_time_axis(shape):
    with pytest.raises(ValueError, match=_m("`xs`", "(*batch, T, I)", str(shape))):
        rx.scan(GRU, P_GRU, jnp.ones(shape))


def test_scan_needs_a_cell_or_a_layer():
    with pytest.raises(TypeError, match=_m("`cell`", "recurrax.Cell or Layer", "function")):
        rx.scan(GRU.step, P_GRU, XS)
    with pytest.raises(ValueError, match=_m("params", "tuple with one entry per layer")):
        rx.scan(rx.stacked([GRU]), P_GRU, XS)  # a layer runs, and checks its params


def test_include_initial_needs_return_states():
    with pytest.raises(ValueError, match=_m("`include_initial=True`", "`return_states=True`")):
        rx.scan(GRU, P_GRU, XS, include_initial=True)


# ------------------------------------------------------------------------------------------- state


@pytest.mark.parametrize(
    "field,h,c",
    [("h", (B, H + 1), (B, H)), ("c", (B, H), (B, H - 1)), ("h", (B, 1, H), (B, H))],
)
def test_wrong_hidden_size_in_each_lstm_state_field(field, h, c):
    state = rx.LSTMState(jnp.zeros(h), jnp.zeros(c))
    got = h if field == "h" else c
    with pytest.raises(ValueError, match=_m(f"`state.{field}`", f"({B}, {H})", str(got))):
        rx.scan(LSTM, P_LSTM, XS, state)
    with pytest.raises(ValueError, match=_m(f"`state.{field}`", f"({B}, {H})", str(got))):
        LSTM.step(P_LSTM, state, XS[:, 0])


def test_wrong_hidden_size_with_projection():
    cell = rx.lstm(H, proj_size=2)
    params = random_params(cell, 0, I)
    state = rx.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H)))  # h must have proj_size features
    with pytest.raises(ValueError, match=_m("`state.h`", f"({B}, 2)", f"({B}, {H})")):
        rx.scan(cell, params, XS, state)


@pytest.mark.parametrize(
    "state",
    [
        (jnp.zeros((B, H)), jnp.zeros((B, H))),  # a plain tuple, not an LSTMState
        rx.RNNState(jnp.zeros((B, H))),
        jnp.zeros((B, H)),
    ],
    ids=["tuple", "rnn_state", "array"],
)
def test_wrong_state_structure(state):
    with pytest.raises(TypeError, match=_m("`state`", "LSTMState", "got")):
        rx.scan(LSTM, P_LSTM, XS, state)


def test_gru_given_an_lstm_state():
    with pytest.raises(TypeError, match=_m("`state`", "RNNState", "LSTMState")):
        rx.scan(GRU, P_GRU, XS, rx.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H))))


def test_integer_state():
    with pytest.raises(TypeError, match=_m("`state.h`", "floating-point", "int32")):
        rx.scan(GRU, P_GRU, XS, rx.RNNState(jnp.zeros((B, H), jnp.int32)))


@pytest.mark.parametrize("batch", [(B + 1,), (), (1, B)])
def test_mismatched_batch_dims(batch):
    state = GRU.initial_state(P_GRU, batch)
    with pytest.raises(ValueError, match=_m("`state.h`", f"({B}, {H})", "batch (2,)", str((*batch, H)))):
        rx.scan(GRU, P_GRU, XS, state)


# ----------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("shape", [(B + 1,), (), (B, 1)])
def test_lengths_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match=_m("`lengths`", "(2,)", str(shape))):
        rx.scan(GRU, P_GRU, XS, lengths=np.zeros(shape, int))


def test_lengths_of_float_dtype():
    with pytest.raises(TypeError, match=_m("`lengths`", "integer", "float32")):
        rx.scan(GRU, P_GRU, XS, lengths=jnp.array([1.0, 2.0]))


@pytest.mark.parametrize("lengths", [[-1, 2], [T + 1, 2]])
def test_lengths_out_of_range(lengths):
    with pytest.raises(ValueError, match=_m("`lengths`", f"[0, T={T}]", f"[{min(lengths)}, {max(lengths)}]")):
        rx.scan(GRU, P_GRU, XS, lengths=np.array(lengths))


def test_lengths_through_layers_are_checked():
    with pytest.raises(ValueError, match=_m("`lengths`", "(2,)", "(3,)")):
        layer = rx.bidirectional(GRU, GRU)
        layer.apply(layer.init(jax.random.key(0), I), XS, lengths=np.array([1, 2, 3]))


# ----------------------------------------------------------------------------------- factory args


@pytest.mark.parametrize("factory", [rx.elman, rx.lstm, rx.gru, rx.mgu])
@pytest.mark.parametrize("size", [0, -1, 2.0, True, None])
def test_bad_hidden_size(factory, size):
    with pytest.raises(ValueError, match=_m("`hidden_size`", "positive int", repr(size))):
        factory(size)


@pytest.mark.parametrize("size", [0, 3.5])
def test_bad_input_size_at_init(size):
    with pytest.raises(ValueError, match=_m("`input_size`", "positive int", repr(size))):
        rx.gru(H).init(jax.random.key(0), size)


def test_bad_proj_size_and_cell_clip():
    with pytest.raises(ValueError, match=_m("`proj_size`", "positive int", "0")):
        rx.lstm(H, proj_size=0)
    with pytest.raises(ValueError, match=_m("`cell_clip`", "> 0", "-1.0")):
        rx.lstm(H, cell_clip=-1.0)


@pytest.mark.parametrize("factory", [rx.elman, rx.lstm, rx.gru, rx.mgu])
def test_unknown_init_scheme(factory):
    with pytest.raises(ValueError, match=_m("unknown scheme", "'xavier'", "glorot_orthogonal", "pytorch")):
        factory(H, init="xavier")


def test_bad_chrono_arguments():
    for bad in (2.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=_m("`chrono_t_max`", "> 2", repr(bad))):
            rx.lstm(H, chrono_t_max=bad)  # at construction, not at init
    with pytest.raises(ValueError, match=_m("`chrono_t_max`", "use_bias=True")):
        rx.gru(H, chrono_t_max=10.0, use_bias=False)


def test_activation_must_be_callable():
    with pytest.raises(TypeError, match=_m("`activation`", "elementwise function", "'tanh'")):
        rx.elman(H, activation="tanh")


@pytest.mark.parametrize("merge", ["max", "CONCAT"])
def test_unknown_merge(merge):
    with pytest.raises(ValueError, match=_m("`merge`", repr(merge), "ave", "concat", "mul", "sum")):
        rx.bidirectional(GRU, GRU, merge=merge)


def test_merge_of_the_wrong_type():
    with pytest.raises(TypeError, match=_m("`merge`", "a string, a function or None", "3")):
        rx.bidirectional(GRU, GRU, merge=3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_bad_dropout(rate):
    with pytest.raises(ValueError, match=_m("`dropout`", "[0, 1)", repr(rate))):
        rx.stacked([GRU, GRU], dropout=rate)


def test_bad_stacks():
    with pytest.raises(ValueError, match=_m("`layers`", "empty")):
        rx.stacked([])
    with pytest.raises(TypeError, match=_m("Cell or Layer", "int")):
        rx.stacked([GRU, 3])
    with pytest.raises(ValueError, match=_m("residual", "layer 1", "input 5", "output 4")):
        rx.stacked([GRU, rx.gru(4)], residual=True).init(jax.random.key(0), I)
    layer = rx.stacked([GRU, GRU])
    params = layer.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=_m("`params`", "one entry per layer (2)", "length 1")):
        layer.apply(params[:1], XS)
    with pytest.raises(ValueError, match=_m("`state`", "one entry per layer (2)", "length 3")):
        layer.apply(params, XS, (None, None, None))
