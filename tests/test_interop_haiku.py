"""recurrax.interop.haiku: converted params compute what Haiku's own LSTM, GRU and VanillaRNN compute.

Reference: Haiku itself (``hk.transform`` + ``hk.dynamic_unroll``); the param layouts come from its ``init``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax.interop import from_haiku, to_haiku

hk = pytest.importorskip("haiku")

B, T, I, H = 3, 7, 5, 4
XS = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
TOL = {"atol": 1e-6, "rtol": 1e-6}
CORES = {"lstm": hk.LSTM, "gru": hk.GRU, "vanilla_rnn": hk.VanillaRNN}
EPS = float(np.finfo(np.float32).eps)  # one ulp of 1: what Haiku's LSTM forget offset costs, in and out
# Jitted, so each cell (equal by its constructor's arguments) compiles once; unjitted, every call traces anew.
SCAN = jax.jit(rx.scan, static_argnums=0)


@functools.cache
def _haiku(kind: str, double_bias: bool = True):
    """``(init, jitted apply)`` of a batch-major unroll of the Haiku core, cached so each compiles once."""

    def unroll(xs):
        core = CORES[kind](H, double_bias=double_bias) if kind == "vanilla_rnn" else CORES[kind](H)
        return hk.dynamic_unroll(core, xs, core.initial_state(B), time_major=False)

    model = hk.without_apply_rng(hk.transform(unroll))
    return model.init, jax.jit(model.apply)


def _layout(kind: str, double_bias: bool = True):
    """Haiku's param names and shapes (its init, traced only)."""
    return jax.eval_shape(_haiku(kind, double_bias)[0], jax.random.key(0), XS)


def _random(shapes, seed: int):
    # Random biases too: Haiku's init makes them zero, which would hide a misplaced one. NumPy, not an init:
    # compiling the PRNG ops would take longer than the rest of a test.
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(scale=0.5, size=s.shape), s.dtype), shapes)


def _haiku_params(kind: str, double_bias: bool = True, seed: int = 0):
    return _random(_layout(kind, double_bias), seed)


def _params(cell, seed: int = 1):
    """Random params in the layout of ``cell.init``."""
    return _random(jax.eval_shape(lambda key: cell.init(key, I), jax.random.key(0)), seed)


def _assert_runs_alike(kind, haiku_params, cell, params, double_bias=True):
    ys, state = _haiku(kind, double_bias)[1](haiku_params, XS)
    final, ys_rx = SCAN(cell, params, XS)
    np.testing.assert_allclose(ys_rx, ys, **TOL)
    if kind == "lstm":
        np.testing.assert_allclose(final.h, state.hidden, **TOL)
        np.testing.assert_allclose(final.c, state.cell, **TOL)
    else:
        np.testing.assert_allclose(final.h, state, **TOL)


@pytest.mark.parametrize(
    "kind, double_bias", [("lstm", True), ("gru", True), ("vanilla_rnn", True), ("vanilla_rnn", False)]
)
def test_from_haiku_runs_as_haiku(kind, double_bias):
    haiku_params = _haiku_params(kind, double_bias)
    cell, params = from_haiku(haiku_params, kind)
    assert cell == {"lstm": rx.lstm(H), "gru": rx.gru(H, reset_after=False)}.get(
        kind, rx.elman(H, activation=jax.nn.relu)
    )
    _assert_runs_alike(kind, haiku_params, cell, params, double_bias)


@pytest.mark.parametrize(
    "kind, cell, double_bias",
    [
        ("lstm", rx.lstm(H), None),
        ("lstm", rx.lstm(H, use_bias=False), None),  # the forget offset still needs a bias: -1
        ("gru", rx.gru(H, reset_after=False), None),
        ("vanilla_rnn", rx.elman(H, activation=jax.nn.relu), None),
        ("vanilla_rnn", rx.elman(H, activation=jax.nn.relu), False),
    ],
    ids=["lstm", "lstm-no-bias", "gru", "vanilla_rnn", "vanilla_rnn-single-bias"],
)
def test_to_haiku_runs_as_recurrax(kind, cell, double_bias):
    params = _params(cell)
    haiku_params = to_haiku(cell, params, double_bias=double_bias)
    expected = _layout(kind, double_bias is not False)
    assert jax.tree.structure(haiku_params) == jax.tree.structure(expected)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), haiku_params) == jax.tree.map(
        lambda s: (s.shape, s.dtype), expected
    )
    _assert_runs_alike(kind, haiku_params, cell, params, double_bias is not False)


def _forget_block(params_b):
    return np.asarray(params_b)[..., 2 * H : 3 * H]  # the forget block in either order (i, g, f, o / i, f, g, o)


@pytest.mark.parametrize("kind", ["lstm", "gru", "vanilla_rnn"])
def test_round_trips(kind):
    # Haiku -> recurrax -> Haiku: bit for bit, except the LSTM's forget bias (+1, then -1) and the
    # VanillaRNN's two biases, which become one (their sum, then all in the input Linear's).
    haiku_params = _haiku_params(kind, seed=2)
    cell, params = from_haiku(haiku_params, kind)
    back = to_haiku(cell, params)
    assert jax.tree.structure(back) == jax.tree.structure(haiku_params)
    if kind == "lstm":
        got, want = back["lstm/linear"], haiku_params["lstm/linear"]
        np.testing.assert_array_equal(got["w"], want["w"])
        keep = np.r_[0 : 2 * H, 3 * H : 4 * H]
        np.testing.assert_array_equal(got["b"][keep], want["b"][keep])
        np.testing.assert_allclose(_forget_block(got["b"]), _forget_block(want["b"]), rtol=0, atol=EPS)
        assert not np.array_equal(got["b"], want["b"])  # the offset does round: the tolerance is needed
    elif kind == "vanilla_rnn":
        i2h, h2h = "vanilla_rnn/linear", "vanilla_rnn/linear_1"
        for key in (i2h, h2h):
            np.testing.assert_array_equal(back[key]["w"], haiku_params[key]["w"])
        np.testing.assert_array_equal(back[i2h]["b"], haiku_params[i2h]["b"] + haiku_params[h2h]["b"])
        np.testing.assert_array_equal(back[h2h]["b"], np.zeros(H, np.float32))
    else:
        jax.tree.map(np.testing.assert_array_equal, back, haiku_params)

    # recurrax -> Haiku -> recurrax: bit for bit, except the LSTM's forget bias (-1, then +1).
    params = _params(cell, seed=3)
    cell_back, params_back = from_haiku(to_haiku(cell, params), kind)
    assert cell_back == cell
    if kind == "lstm":
        np.testing.assert_array_equal(params_back["w_i"], params["w_i"])
        np.testing.assert_array_equal(params_back["w_h"], params["w_h"])
        np.testing.assert_allclose(params_back["b"], params["b"], rtol=0, atol=EPS)
    else:
        jax.tree.map(np.testing.assert_array_equal, params_back, params)


def test_nested_module_names():
    class Model(hk.Module):
        def __init__(self):
            super().__init__(name="my_model")
            self.core = hk.LSTM(H)  # made in __init__: named "my_model/~/lstm"

        def __call__(self, xs):
            ys, state = hk.dynamic_unroll(self.core, xs, self.core.initial_state(B), time_major=False)
            return hk.Linear(2)(ys), state  # "my_model/linear": also a Linear, not the LSTM's

    model = hk.without_apply_rng(hk.transform(lambda xs: Model()(xs)))
    haiku_params = _random(jax.eval_shape(model.init, jax.random.key(0), XS), seed=4)
    assert sorted(haiku_params) == ["my_model/linear", "my_model/~/lstm/linear"]
    cell, params = from_haiku(haiku_params, hk.LSTM)  # found by its default name, at any depth
    named = from_haiku(haiku_params, "lstm", name="my_model/~/lstm")[1]
    jax.tree.map(np.testing.assert_array_equal, named, params)

    # Out under the nested name: the model runs on it as on its own params.
    rebuilt = {**to_haiku(cell, params, name="my_model/~/lstm"), "my_model/linear": haiku_params["my_model/linear"]}
    apply = jax.jit(model.apply)
    (out, state), (out_back, state_back) = apply(haiku_params, XS), apply(rebuilt, XS)
    np.testing.assert_allclose(out_back, out, **TOL)
    np.testing.assert_allclose(state_back.cell, state.cell, **TOL)

    # Two LSTMs: the default name no longer tells which, `name=` does.
    lstm_params = haiku_params["my_model/~/lstm/linear"]
    two = {"a/lstm/linear": lstm_params, "a/lstm_1/linear": rebuilt["my_model/~/lstm/linear"]}
    with pytest.raises(ValueError, match=r"2 \(\['a/lstm', 'a/lstm_1'\]\) hk.LSTM modules.*Pass `name=`"):
        from_haiku(two, "lstm")
    jax.tree.map(np.testing.assert_array_equal, from_haiku(two, "lstm", name="a/lstm")[1], params)


def _lstm_params(**changes):
    params = _haiku_params("lstm")
    params["lstm/linear"] = {**params["lstm/linear"], **changes}
    return params


def _to(cell, **kwargs):
    return lambda: to_haiku(cell, _params(cell), **kwargs)


REFUSALS = {
    # to_haiku: what Haiku's cores do not compute, by option.
    "peephole": (_to(rx.lstm(H, peephole=True)), ValueError, r"hk.LSTM computes `peephole=False`.*`peephole=True`"),
    "proj_size": (_to(rx.lstm(H, proj_size=2)), ValueError, r"`proj_size=None`.*`proj_size=2`"),
    "layer_norm": (_to(rx.lstm(H, layer_norm=True)), ValueError, r"`layer_norm=False`.*`layer_norm=True`"),
    "cell_clip": (_to(rx.lstm(H, cell_clip=3.0)), ValueError, r"`cell_clip=None`.*`cell_clip=3.0`"),
    "dtype": (_to(rx.lstm(H, dtype=jnp.bfloat16)), ValueError, r"`dtype=None`.*`dtype=bfloat16`"),
    "reset_after": (_to(rx.gru(H)), ValueError, r"hk.GRU computes `reset_after=False`.*`reset_after=True`"),
    "activation": (_to(rx.elman(H)), ValueError, r"hk.VanillaRNN computes `activation=jax.nn.relu`.*tanh"),
    "gate_activation": (
        _to(rx.lstm(H, gate_activation=jax.nn.hard_sigmoid)),
        ValueError,
        r"hk.LSTM computes `gate_activation=<.*sigmoid.*>`.*`gate_activation=hard_sigmoid`",
    ),
    "gru activation": (_to(rx.gru(H, reset_after=False, activation=jax.nn.relu)), ValueError, r"`activation=relu`"),
    "residual": (
        _to(rx.elman(H, activation=jax.nn.relu, residual=True)),
        ValueError,
        r"`residual=False`.*`residual=True`",
    ),
    "other cell": (_to(rx.mgu(H)), ValueError, r"no equivalent of recurrax's `mgu` cell"),
    "replaced function": (
        _to(rx.lstm(H)._replace(transition=rx.lstm(H).transition)),
        ValueError,
        r"cannot tell what this `lstm` cell computes",
    ),
    "layer": (_to(rx.stacked([rx.lstm(H)] * 2)), TypeError, r"got the layer"),
    "double_bias": (_to(rx.lstm(H), double_bias=False), ValueError, r"`double_bias` is an option of hk.VanillaRNN"),
    "params": (lambda: to_haiku(rx.lstm(H), _params(rx.gru(H))), ValueError, r"`params` do not fit the lstm cell"),
    "to name": (_to(rx.lstm(H), name=""), ValueError, r"`name` must be a non-empty module name"),
    # from_haiku: bad params, by key and array.
    "not a dict": (lambda: from_haiku([1.0], "lstm"), TypeError, r"`params` must be a Haiku params dict"),
    "kind": (lambda: from_haiku(_haiku_params("lstm"), "rnn"), ValueError, r"`kind` must be one of.*got 'rnn'"),
    "no module": (lambda: from_haiku(_haiku_params("lstm"), "gru"), ValueError, r"no hk.GRU modules.*`name=`"),
    "name": (
        lambda: from_haiku(_haiku_params("lstm"), "lstm", name="encoder"),
        ValueError,
        r"lack the hk.LSTM entry 'encoder/linear'",
    ),
    "missing b": (
        lambda: from_haiku({"lstm/linear": {"w": _haiku_params("lstm")["lstm/linear"]["w"]}}, "lstm"),
        ValueError,
        r"`params\['lstm/linear'\]` lack 'b'",
    ),
    "extra key": (lambda: from_haiku(_lstm_params(v=np.zeros(3)), "lstm"), ValueError, r"an unexpected 'v'"),
    "w shape": (
        lambda: from_haiku(_lstm_params(w=np.zeros((9, 15), np.float32)), "lstm"),
        ValueError,
        r"`params\['lstm/linear'\]\['w'\]` must have shape \(I \+ H, 4H\).*got \(9, 15\)",
    ),
    "b shape": (
        lambda: from_haiku(_lstm_params(b=np.zeros(12, np.float32)), "lstm"),
        ValueError,
        r"`params\['lstm/linear'\]\['b'\]` must have shape \(16,\), got \(12,\)",
    ),
    "int dtype": (
        lambda: from_haiku(_lstm_params(b=np.zeros(16, np.int32)), "lstm"),
        TypeError,
        r"`params\['lstm/linear'\]\['b'\]` must be floating-point, got dtype int32",
    ),
    "float64": (
        lambda: from_haiku(_lstm_params(b=np.zeros(16, np.float64)), "lstm"),
        ValueError,
        r"one floating-point dtype, got \['float32', 'float64'\]",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_option(case):
    call, error, message = REFUSALS[case]
    with pytest.raises(error, match=message):
        call()
