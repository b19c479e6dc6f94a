"""A catalogue of bad and edge inputs across the public API (issue 17: no silent wrong answers).

Every case either raises, naming the argument (and where sensible the expected and the received shape, dtype or
value), or returns exactly the valid result, checked against an independent reference: the same call with
concrete values, the NumPy equations of ``reference.py``, or ``backend="sequential"``. One pytest class per
class of bad input; sizes are tiny (B=2, T=4, I=3, H=5).
"""

import functools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax as rx
import reference as ref
from recurrax import backends as rxb
from recurrax import dynamics as dyn
from recurrax import long_sequences as ls
from recurrax.sequence_parallel import sequence_parallel_scan
from reference import random_params

B, T, I, H, N = 2, 4, 3, 5, 4
NAN, INF = float("nan"), float("inf")

CELLS = {
    "elman": rx.elman(H),
    "gru": rx.gru(H),
    "mgu": rx.mgu(H),
    "lstm": rx.lstm(H),
    "lstm_proj": rx.lstm(H, proj_size=2),
    "min_gru": rx.min_gru(H),
    "min_lstm": rx.min_lstm(H),
    "lru": rx.lru(H, N),
}
PARAMS = {name: random_params(cell, 0, I) for name, cell in CELLS.items()}
OUT = {name: 2 if name == "lstm_proj" else H for name in CELLS}  # output features
XS = ref.random_inputs((B, T, I), 1)
X1 = ref.random_inputs((B, I), 2)


def _m(*parts: str) -> str:
    """A regex matching ``parts`` in order, anything in between."""
    return ".*".join(re.escape(p) for p in parts)


def _raises(exc, *parts: str):
    return pytest.raises(exc, match=re.compile(_m(*parts), re.S))


def _close(got, want, rtol=1e-5, atol=1e-6):
    """Same tree structure and leaf shapes, values equal to rounding (NaN where the other has NaN)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def _finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(leaf)).all()) for leaf in jax.tree.leaves(tree))


def _jit(call):
    """``call()`` compiled as one program (every closed-over value stays concrete): far cheaper than op by op."""
    return jax.jit(call)()


def _runnable(name: str, xs=XS, **options) -> list[str]:
    """The backends that can run ``scan(CELLS[name], PARAMS[name], xs, **options)``."""
    table = rxb.available(CELLS[name], PARAMS[name], xs, **options)
    return [b for b, why in table.items() if why is None]


def _z(*shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


def _same_or_raises(call, want, *parts: str):
    """``call()`` equals ``want``, or raises a ValueError whose message matches ``parts``."""
    try:
        got = call()
    except ValueError as err:
        assert re.search(_m(*parts), str(err), re.S), f"the ValueError does not name {parts}: {err}"
        return
    _close(got, want)


# ================================================================================================ 1. inputs


class TestInputs:
    @staticmethod
    def _bad(kind: str, shape: tuple[int, ...]):
        if kind == "features":
            x = jnp.ones((*shape[:-1], I + 2))
            return x, ValueError, ("`x`", f"(..., {I})", str(tuple(x.shape)))
        dtype = {"int32": jnp.int32, "bool": jnp.bool_, "complex64": jnp.complex64}[kind]
        return jnp.ones(shape, dtype), TypeError, ("`x`", "real floating-point", kind)

    @pytest.mark.parametrize("route", ["scan", "step", "project"])
    @pytest.mark.parametrize("kind", ["features", "int32", "bool", "complex64"])
    @pytest.mark.parametrize("name", list(CELLS))
    def test_bad_x(self, name, kind, route):
        cell, params = CELLS[name], PARAMS[name]
        shape = (B, I) if route == "step" else (B, T, I)
        x, exc, parts = self._bad(kind, shape)
        with _raises(exc, *parts):
            if route == "scan":
                rx.scan(cell, params, x)
            elif route == "step":
                cell.step(params, cell.initial_state(params, (B,)), x)
            else:
                cell.project(params, x)

    @pytest.mark.parametrize(
        "route,shape", [("scan", (I,)), ("scan", ()), ("step", ())], ids=["scan_1d", "scan_0d", "step_0d"]
    )
    @pytest.mark.parametrize("name", list(CELLS))
    def test_too_few_axes(self, name, route, shape):
        cell, params = CELLS[name], PARAMS[name]
        if route == "scan":
            with _raises(ValueError, "`xs`", "(*batch, T, I)", str(shape)):
                rx.scan(cell, params, jnp.ones(shape))
        else:
            with _raises(ValueError, "`x`", f"(..., {I})", "()"):
                cell.step(params, cell.initial_state(params, ()), jnp.ones(shape))


# ================================================================================================ 2. states

LRU_X = jnp.complex64


def _s(name, **fields):
    """A state of ``CELLS[name]``'s structure for batch (B,), with the given leaves replaced."""
    state = CELLS[name].initial_state(PARAMS[name], (B,))
    return state._replace(**fields)


# (id, cell, state, exception, leaf ("" = the whole state), what the message shows after the name)
STATE_CASES = [
    ("lstm_given_rnn_state", "lstm", rx.RNNState(_z(B, H)), TypeError, "", ("LSTMState", "RNNState")),
    ("lstm_given_tuple", "lstm", (_z(B, H), _z(B, H)), TypeError, "", ("LSTMState",)),
    ("gru_given_lstm_state", "gru", rx.LSTMState(_z(B, H), _z(B, H)), TypeError, "", ("RNNState", "LSTMState")),
    ("gru_given_array", "gru", _z(B, H), TypeError, "", ("RNNState",)),
    ("lru_given_rnn_state", "lru", rx.RNNState(_z(B, H)), TypeError, "", ("LRUState", "RNNState")),
    ("lstm_h_size", "lstm", _s("lstm", h=_z(B, H + 1)), ValueError, ".h", ((B, H), (B, H + 1))),
    ("lstm_c_size", "lstm", _s("lstm", c=_z(B, H - 1)), ValueError, ".c", ((B, H), (B, H - 1))),
    ("lstm_proj_h_size", "lstm_proj", _s("lstm_proj", h=_z(B, H)), ValueError, ".h", ((B, 2), (B, H))),
    ("gru_h_batch", "gru", _s("gru", h=_z(B + 1, H)), ValueError, ".h", ((B, H), (B + 1, H))),
    ("elman_h_rank", "elman", _s("elman", h=_z(B, 1, H)), ValueError, ".h", ((B, H), (B, 1, H))),
    ("min_gru_h_size", "min_gru", _s("min_gru", h=_z(B, H + 2)), ValueError, ".h", ((B, H), (B, H + 2))),
    ("lru_x_size", "lru", _s("lru", x=_z(B, N + 1, dtype=LRU_X)), ValueError, ".x", ((B, N), (B, N + 1))),
    ("lru_y_size", "lru", _s("lru", y=_z(B, H + 1)), ValueError, ".y", ((B, H), (B, H + 1))),
    ("gru_h_int32", "gru", _s("gru", h=_z(B, H, dtype=jnp.int32)), TypeError, ".h", ("floating-point", "int32")),
    ("lstm_c_int32", "lstm", _s("lstm", c=_z(B, H, dtype=jnp.int32)), TypeError, ".c", ("floating-point", "int32")),
    ("mgu_h_bool", "mgu", _s("mgu", h=_z(B, H, dtype=jnp.bool_)), TypeError, ".h", ("floating-point", "bool")),
    ("gru_h_complex", "gru", _s("gru", h=_z(B, H, dtype=jnp.complex64)), TypeError, ".h", ("real", "complex64")),
    ("lstm_c_complex", "lstm", _s("lstm", c=_z(B, H, dtype=jnp.complex64)), TypeError, ".c", ("real", "complex64")),
    ("lstm_h_float16", "lstm", _s("lstm", h=_z(B, H, dtype=jnp.float16)), TypeError, ".h", ("float32", "float16")),
    (
        "min_gru_h_bf16",
        "min_gru",
        _s("min_gru", h=_z(B, H, dtype=jnp.bfloat16)),
        TypeError,
        ".h",
        ("float32", "bfloat16"),
    ),
    ("lru_x_real", "lru", _s("lru", x=_z(B, N)), TypeError, ".x", ("complex", "float32")),
    ("lru_y_complex", "lru", _s("lru", y=_z(B, H, dtype=jnp.complex64)), TypeError, ".y", ("real", "complex64")),
]


class TestStates:
    @pytest.mark.parametrize("route", ["scan", "step", "reset", "reset_state"])
    @pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
    def test_bad_state(self, case, route):
        _, name, state, exc, leaf, shown = case
        cell, params = CELLS[name], PARAMS[name]
        arg = "reset_state" if route == "reset_state" else "state"
        parts = [f"`{arg}{leaf}`", *(str(p) for p in shown)]
        with _raises(exc, *parts):
            if route == "scan":
                rx.scan(cell, params, XS, state)
            elif route == "step":
                cell.step(params, state, X1)
            elif route == "reset":
                rx.reset(cell, params, state, jnp.array([True, False]))
            else:
                rx.scan(cell, params, XS, resets=jnp.zeros((B, T), bool), reset_state=state)


# ================================================================================================ 3. params


def _edit(name, drop=(), **leaves):
    params = {k: v for k, v in PARAMS[name].items() if k not in drop}
    params.update(leaves)
    return params


# (id, cell, params, exception, what the message shows); params are checked in pytree (sorted-key) order
PARAM_CASES = [
    ("lstm_given_gru_params", "lstm", PARAMS["gru"], ValueError, ("`params`", "b_hn")),
    ("gru_given_lstm_params", "gru", PARAMS["lstm"], ValueError, ("`params`", "b_hn")),
    ("min_gru_given_gru_params", "min_gru", PARAMS["gru"], ValueError, ("`params`", "w_h")),
    ("lstm_given_lru_params", "lstm", PARAMS["lru"], ValueError, ("`params`", "w_i")),
    ("lru_given_lstm_params", "lru", PARAMS["lstm"], ValueError, ("`params`", "b_re")),
    (
        "lstm_other_hidden",
        "lstm",
        random_params(rx.lstm(H + 1), 0, I),
        ValueError,
        ("`params['b']`", "(20,)", "(24,)"),
    ),
    (
        "gru_other_hidden",
        "gru",
        random_params(rx.gru(H - 1), 0, I),
        ValueError,
        ("`params['b']`", "(15,)", "(12,)"),
    ),
    (
        "elman_other_hidden",
        "elman",
        random_params(rx.elman(H + 1), 0, I),
        ValueError,
        ("`params['b']`", "(5,)", "(6,)"),
    ),
    (
        "lru_other_hidden",
        "lru",
        random_params(rx.lru(H + 1, N), 0, I),
        ValueError,
        ("`params['c_im']`", "(4, 5)", "(4, 6)"),
    ),
    (
        "lru_other_state_size",
        "lru",
        random_params(rx.lru(H, N + 1), 0, I),
        ValueError,
        ("`params['b_im']`", "(3, 4)", "(3, 5)"),
    ),
    ("lstm_missing_b", "lstm", _edit("lstm", drop=("b",)), ValueError, ("`params`", "['b']")),
    ("lstm_missing_w_i", "lstm", _edit("lstm", drop=("w_i",)), ValueError, ("`params`", "['w_i']")),
    ("gru_missing_b_hn", "gru", _edit("gru", drop=("b_hn",)), ValueError, ("`params`", "['b_hn']")),
    ("min_gru_missing_b", "min_gru", _edit("min_gru", drop=("b",)), ValueError, ("`params`", "['b']")),
    ("lru_missing_b_re", "lru", _edit("lru", drop=("b_re",)), ValueError, ("`params`", "['b_re']")),
    ("lstm_bias_1", "lstm", _edit("lstm", b=_z(1)), ValueError, ("`params['b']`", "(20,)", "(1,)")),
    ("gru_bias_1", "gru", _edit("gru", b=_z(1)), ValueError, ("`params['b']`", "(15,)", "(1,)")),
    ("gru_b_hn_1", "gru", _edit("gru", b_hn=_z(1)), ValueError, ("`params['b_hn']`", "(5,)", "(1,)")),
    ("min_gru_bias_1", "min_gru", _edit("min_gru", b=_z(1)), ValueError, ("`params['b']`", "(10,)", "(1,)")),
    (
        "lstm_w_h_transposed",
        "lstm",
        _edit("lstm", w_h=_z(4 * H, H)),
        ValueError,
        ("`params['w_h']`", "(5, 20)", "(20, 5)"),
    ),
    ("lstm_extra_key", "lstm", _edit("lstm", extra=_z(1)), ValueError, ("`params`", "unexpected", "['extra']")),
    ("mgu_extra_key", "mgu", _edit("mgu", b_hn=_z(H)), ValueError, ("`params`", "unexpected", "['b_hn']")),
    (
        "gru_w_h_int32",
        "gru",
        _edit("gru", w_h=_z(H, 3 * H, dtype=jnp.int32)),
        TypeError,
        ("`params['w_h']`", "floating-point", "int32"),
    ),
    ("params_none", "gru", None, ValueError, ("`params`", "NoneType")),
    ("params_list", "gru", list(PARAMS["gru"].values()), ValueError, ("`params`",)),
    ("params_of_a_stack", "gru", (PARAMS["gru"],), ValueError, ("`params`",)),
]


class TestParams:
    @pytest.mark.parametrize("route", ["scan", "step"])
    @pytest.mark.parametrize("case", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
    def test_bad_params(self, case, route):
        _, name, params, exc, shown = case
        cell = CELLS[name]
        with _raises(exc, *shown):
            if route == "scan":
                rx.scan(cell, params, XS)
            else:
                cell.step(params, cell.initial_state(PARAMS[name], (B,)), X1)


# ======================================================================================= 4. hyper-parameters

FACTORIES = {
    "elman": rx.elman,
    "gru": rx.gru,
    "mgu": rx.mgu,
    "lstm": rx.lstm,
    "min_gru": rx.min_gru,
    "min_lstm": rx.min_lstm,
    "lru": lambda h, **kw: rx.lru(h, N, **kw),
}
CHRONO = ["gru", "mgu", "lstm", "min_gru", "min_lstm"]  # the factories with a `chrono_t_max`


class TestHyperParameters:
    @pytest.mark.parametrize("size", [0, -1, 2.5, True, None])
    @pytest.mark.parametrize("factory", list(FACTORIES))
    def test_hidden_size(self, factory, size):
        with _raises(ValueError, "`hidden_size`", repr(size)):
            FACTORIES[factory](size)

    @pytest.mark.parametrize("size", [0, -2, 1.5])
    def test_lru_state_size(self, size):
        with _raises(ValueError, "`state_size`", repr(size)):
            rx.lru(H, size)

    @pytest.mark.parametrize("size", [0, -1, 2.5])
    @pytest.mark.parametrize("factory", list(FACTORIES))
    def test_input_size_at_init(self, factory, size):
        with _raises(ValueError, "`input_size`", repr(size)):
            FACTORIES[factory](H).init(jax.random.key(0), size)

    @pytest.mark.parametrize("value", [NAN, INF, -INF, "1.0"])
    def test_forget_bias(self, value):
        with _raises(ValueError, "`forget_bias`", repr(value)):
            rx.lstm(H, forget_bias=value)

    @pytest.mark.parametrize("t_max", [INF, NAN, 0.5, 2.0, -3.0])
    @pytest.mark.parametrize("factory", CHRONO)
    def test_chrono_t_max(self, factory, t_max):
        with _raises(ValueError, "`chrono_t_max`", repr(t_max)):
            FACTORIES[factory](H, chrono_t_max=t_max)

    @pytest.mark.parametrize("proj", [0, -1, H, H + 1, 2.5])
    def test_proj_size(self, proj):
        # PyTorch's rule: 0 < proj_size < hidden_size (a projection as wide as the cell projects nothing away).
        with _raises(ValueError, "`proj_size`", repr(proj)):
            rx.lstm(H, proj_size=proj)

    @pytest.mark.parametrize("clip", [0.0, -1.0, NAN])
    def test_cell_clip(self, clip):
        with _raises(ValueError, "`cell_clip`", repr(clip)):
            rx.lstm(H, cell_clip=clip)

    @pytest.mark.parametrize("r_min,r_max", [(-0.1, 0.5), (0.0, 1.5), (0.9, 0.5), (1.0, 1.0), (NAN, 0.5), (0.1, NAN)])
    def test_lru_ring(self, r_min, r_max):
        with _raises(ValueError, "r_min", "r_max", repr(r_min), repr(r_max)):
            rx.lru(H, N, r_min=r_min, r_max=r_max)

    @pytest.mark.parametrize("phase", [0.0, -1.0, 7.0, NAN])
    def test_lru_max_phase(self, phase):
        with _raises(ValueError, "`max_phase`", repr(phase)):
            rx.lru(H, N, max_phase=phase)

    @pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64, "banana"], ids=["int32", "complex64", "banana"])
    @pytest.mark.parametrize("factory", list(FACTORIES))
    def test_param_dtype(self, factory, dtype):
        with _raises(ValueError, "`param_dtype`"):
            FACTORIES[factory](H, param_dtype=dtype)

    @pytest.mark.parametrize("factory", ["elman", "gru", "mgu", "lstm", "min_gru", "lru"])
    def test_compute_dtype(self, factory):
        with _raises(ValueError, "`dtype`", "int8"):
            FACTORIES[factory](H, dtype=jnp.int8)

    @pytest.mark.parametrize(
        "bad,error,says",
        [
            ("relu", TypeError, "'relu'"),  # a Keras name, not a function
            (lambda a: a.sum(), ValueError, "maps a (2, 3) array to ()"),
            (lambda a: a @ a, TypeError, "raised TypeError"),  # (2, 3) @ (2, 3)
        ],
        ids=["a name", "a reduction", "raises"],
    )
    @pytest.mark.parametrize(
        "factory,arg",
        [("elman", "activation"), ("gru", "activation"), ("mgu", "gate_activation"), ("lstm", "gate_activation")],
    )
    def test_activation(self, factory, arg, bad, error, says):
        with _raises(error, f"`{arg}`", says):
            FACTORIES[factory](H, **{arg: bad})

    @pytest.mark.parametrize("factory", ["elman", "gru", "mgu", "lstm", "min_gru", "min_lstm"])
    def test_unknown_init_scheme(self, factory):
        with _raises(ValueError, "'xavier'", "pytorch"):
            FACTORIES[factory](H, init="xavier")


# ============================================================================================ 5. scan options


BACKEND_CASES = [
    ("gru", "native_lstm", "runs only the plain LSTM"),
    ("lstm", "native_gru", "runs only the plain reset-after GRU"),
    ("lstm", "associative", "linear recurrence"),
    ("gru", "chunked", "linear recurrence"),
    ("min_gru", "xla_lstm", "runs only the plain LSTM"),
    ("elman", "xla_gru", "runs only the plain reset-after GRU"),
    ("lstm_proj", "native_lstm", "runs only the plain LSTM"),
    ("lstm", "cudnn_lstm", "GPU"),
]


class TestScanOptions:
    @pytest.mark.parametrize("unroll", [0, -1, 1.5, "4", np.float32(2.0)], ids=["0", "-1", "1.5", "str4", "f32"])
    @pytest.mark.parametrize("name", ["lstm", "gru", "min_gru"])
    def test_bad_unroll(self, name, unroll):
        with pytest.raises((ValueError, TypeError), match=_m("`unroll`", repr(unroll))):
            rx.scan(CELLS[name], PARAMS[name], XS, unroll=unroll)

    @pytest.mark.parametrize("unroll", [True, 1, T + 10, np.int64(2)], ids=str)
    @pytest.mark.parametrize("name", ["lstm"])
    def test_valid_unroll_equals_default(self, name, unroll):
        want = _jit(lambda: rx.scan(CELLS[name], PARAMS[name], XS))
        _close(_jit(lambda: rx.scan(CELLS[name], PARAMS[name], XS, unroll=unroll)), want)

    @pytest.mark.parametrize("remat", ["yes", 1, None, "nothing_saveable"], ids=str)
    def test_bad_remat(self, remat):
        with _raises(TypeError, "`remat`", repr(remat)):
            rx.scan(CELLS["gru"], PARAMS["gru"], XS, remat=remat)

    @pytest.mark.parametrize("remat", [True, jax.checkpoint_policies.nothing_saveable], ids=["true", "policy"])
    def test_valid_remat_equals_default(self, remat):
        want = _jit(lambda: rx.scan(CELLS["gru"], PARAMS["gru"], XS))
        _close(_jit(lambda: rx.scan(CELLS["gru"], PARAMS["gru"], XS, remat=remat)), want)

    @pytest.mark.parametrize("backend", ["fast", "LSTM", "", "Sequential"])
    def test_unknown_backend(self, backend):
        with _raises(ValueError, f"unknown backend {backend!r}", "'sequential'"):
            rx.scan(CELLS["lstm"], PARAMS["lstm"], XS, backend=backend)

    @pytest.mark.parametrize("backend", [3, None, ["sequential"]], ids=["int", "none", "list"])
    def test_backend_of_the_wrong_type(self, backend):
        with _raises(TypeError, "`backend`"):
            rx.scan(CELLS["lstm"], PARAMS["lstm"], XS, backend=backend)

    @pytest.mark.parametrize("name,backend,why", BACKEND_CASES, ids=[f"{c[0]}-{c[1]}" for c in BACKEND_CASES])
    def test_backend_that_cannot_run_the_call(self, name, backend, why):
        with _raises(ValueError, f"backend {backend!r} cannot run this call", why):
            rx.scan(CELLS[name], PARAMS[name], XS, backend=backend)

    def test_backend_for_a_replaced_transition(self):
        cell = CELLS["lstm"]._replace(transition=CELLS["lstm"].transition)  # same function: still the LSTM
        rx.scan(cell, PARAMS["lstm"], XS, backend="native_lstm")
        cell = CELLS["lstm"]._replace(transition=lambda p, s, z: CELLS["lstm"].transition(p, s, z))
        with _raises(ValueError, "'native_lstm' cannot run this call", "replaced"):
            rx.scan(cell, PARAMS["lstm"], XS, backend="native_lstm")

    def test_backend_for_float16_params(self):
        cell = rx.lstm(H, param_dtype=jnp.float16)
        params = random_params(cell, 0, I)
        with _raises(ValueError, "'native_lstm' cannot run this call", "float32", "float16"):
            rx.scan(cell, params, XS.astype(jnp.float16), backend="native_lstm")

    @pytest.mark.parametrize("name", ["lstm", "min_gru"])
    def test_include_initial_without_return_states(self, name):
        with _raises(ValueError, "`include_initial=True`", "`return_states=True`"):
            rx.scan(CELLS[name], PARAMS[name], XS, include_initial=True)

    def test_scan_of_a_layer_runs_its_apply_and_refuses_what_apply_lacks(self):
        layer = rx.stacked([CELLS["gru"]])
        _close(rx.scan(layer, (PARAMS["gru"],), XS), layer.apply((PARAMS["gru"],), XS))
        for option, value in (("reverse", True), ("unroll", 2), ("return_states", True), ("backend", "sequential")):
            with _raises(ValueError, "a layer runs through its `apply`", f"no `{option}`"):
                rx.scan(layer, (PARAMS["gru"],), XS, **{option: value})
        with _raises(TypeError, "`cell`", "recurrax.Cell or Layer", "str"):
            rx.scan("gru", PARAMS["gru"], XS)
        with _raises(ValueError, "`key` drives a layer's dropout"):
            rx.scan(CELLS["gru"], PARAMS["gru"], XS, key=jax.random.key(0))


class TestKeys:
    @pytest.mark.parametrize(
        "key", [None, 3, np.zeros(3, np.uint32), np.float32(0.5)], ids=["none", "int", "u32x3", "f32"]
    )
    @pytest.mark.parametrize("name", ["gru", "lstm", "lru"])
    def test_init_without_a_key(self, name, key):
        with _raises(TypeError, "`key`", "PRNG key"):
            CELLS[name].init(key, I)

    def test_raw_and_typed_keys_agree(self):
        raw, typed = CELLS["gru"].init(jax.random.PRNGKey(0), I), CELLS["gru"].init(jax.random.key(0), I)
        _close(raw, typed, rtol=0, atol=0)


# Run where a crash could happen: a kernel reading past its buffers would take pytest down with it.
NATIVE_OPERANDS = """
import jax.numpy as jnp
from recurrax.backends.cpu import native
from recurrax.backends.cpu.build import load
if load() is None:
    print("NO KERNELS"); raise SystemExit
T, N, I, H = 3, 2, 4, 16
z = lambda *s: jnp.zeros(s, jnp.float32)
lstm = dict(w_i=z(I, 4 * H), b=z(4 * H), w_h=z(H, 4 * H), xs=z(T, N, I), h0=z(N, H), c0=z(N, H))
gru = dict(w_i=z(I, 3 * H), b=z(3 * H), w_h=z(H, 3 * H), b_hn=z(H), xs=z(T, N, I), h0=z(N, H))
cases = [(native.lstm_sequence, lstm, bad) for bad in (
    dict(w_h=z(H, 3 * H)), dict(h0=z(N + 1, H)), dict(c0=z(N, H + 16)), dict(b=z(H)), dict(xs=z(T, N)),
    dict(h0=z(N, 12), c0=z(N, 12)), dict(w_i=z(I, 4 * H).astype(jnp.float16)),
)] + [(native.gru_sequence, gru, bad) for bad in (
    dict(b_hn=z(2 * H)), dict(w_h=z(2 * H, 3 * H)), dict(xs=z(T, N + 1, I)),
)]
for fn, good, bad in cases:
    try:
        fn(**{**good, **bad})
    except (ValueError, TypeError) as err:
        assert any(f"`{k}`" in str(err) for k in ("xs", "h0", "c0", "w_i", "w_h", "b", "b_hn")), err
    else:
        raise AssertionError(f"accepted {list(bad)}")
print("REFUSED", len(cases))
"""


def test_native_kernels_refuse_inconsistent_operands_without_crashing():
    done = subprocess.run([sys.executable, "-c", NATIVE_OPERANDS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if "NO KERNELS" in done.stdout:
        pytest.skip("the native kernels could not be built here")
    assert "REFUSED 10" in done.stdout, done.stdout


# ================================================================================================ 6. lengths

# (cell, backend, reverse) for traced out-of-range lengths
TRACED = [
    ("lstm", "sequential", False),
    ("lstm", "xla_lstm", False),
    ("lstm", "native_lstm", True),
    ("gru", "native_gru", False),
    ("min_gru", "associative", False),
    ("min_gru", "associative", True),
]
OUT_OF_RANGE, CLAMPED = [T + 3, -2], [T, 0]


@functools.cache
def _clamped_reference(name, reverse):
    """The sequential run with concrete in-range lengths, those that out-of-range traced ones clamp to."""
    lengths = np.array(CLAMPED)
    return _jit(lambda: rx.scan(CELLS[name], PARAMS[name], XS, lengths=lengths, reverse=reverse, backend="sequential"))


class TestLengths:
    @pytest.mark.parametrize(
        "lengths,exc,shown",
        [
            ([1.0, 2.0], TypeError, ("integer", "float32")),
            ([True, False], TypeError, ("integer", "bool")),
            ([1, 2, 3], ValueError, ("(2,)", "(3,)")),
            (2, ValueError, ("(2,)", "()")),
            ([[1], [2]], ValueError, ("(2,)", "(2, 1)")),
            ([-1, 2], ValueError, (f"[0, T={T}]", "[-1, 2]")),
            ([T + 1, 2], ValueError, (f"[0, T={T}]", f"[2, {T + 1}]")),
        ],
        ids=["float", "bool", "too_many", "scalar", "2d", "negative", "above_T"],
    )
    @pytest.mark.parametrize("name", ["gru", "lstm", "min_gru"])
    def test_bad_concrete_lengths(self, name, lengths, exc, shown):
        with _raises(exc, "`lengths`", *shown):
            rx.scan(CELLS[name], PARAMS[name], XS, lengths=np.asarray(lengths))

    @pytest.mark.parametrize(
        "via",
        ["checkpointed_scan", "truncated_scan", "bidirectional", "stacked", "linen"],
    )
    def test_concrete_lengths_above_T_through_helpers(self, via):
        cell, params, lengths = CELLS["gru"], PARAMS["gru"], np.array([T + 1, 2])
        with _raises(ValueError, "`lengths`", f"T={T}"):
            if via == "checkpointed_scan":
                ls.checkpointed_scan(cell, params, XS, lengths=lengths, segment_size=2)
            elif via == "truncated_scan":
                ls.truncated_scan(cell, params, XS, lengths=lengths, chunk_size=2)
            elif via in ("bidirectional", "stacked"):
                layer = rx.bidirectional(cell, cell) if via == "bidirectional" else rx.stacked([cell, cell])
                layer.apply(random_params(layer, 0, I), XS, lengths=lengths)
            else:
                from recurrax.flax.linen import RNN

                module = RNN(cell)
                module.apply({"params": {"cell": PARAMS["gru"]}}, XS, lengths=lengths)

    @pytest.mark.parametrize(
        "lengths,exc,shown",
        [
            ([T + 1, 0], ValueError, (f"T={T}",)),
            ([-1, 0], ValueError, (f"T={T}",)),
            ([1.0, 2.0], TypeError, ("integer",)),
            ([1, 2, 3], ValueError, ("(3,)",)),
        ],
        ids=["above_T", "negative", "float", "wrong_shape"],
    )
    def test_reverse_sequences_concrete(self, lengths, exc, shown):
        with _raises(exc, "`lengths`", *shown):
            rx.reverse_sequences(jnp.moveaxis(XS, 1, 0), np.asarray(lengths))

    @pytest.mark.parametrize(
        "name,backend,reverse", TRACED, ids=[f"{c}-{b}-{'rev' if r else 'fwd'}" for c, b, r in TRACED]
    )
    def test_traced_lengths_are_clamped(self, name, backend, reverse):
        cell, params = CELLS[name], PARAMS[name]

        def run(lengths):
            return rx.scan(cell, params, XS, lengths=lengths, reverse=reverse, backend=backend)

        got = jax.jit(run)(jnp.array(OUT_OF_RANGE))
        assert _finite(got)
        _close(got, _clamped_reference(name, reverse))

    @pytest.mark.parametrize("via", ["bidirectional", "stacked", "linen", "linen_reverse", "reverse_sequences"])
    def test_traced_lengths_are_clamped_through_helpers(self, via):
        cell = CELLS["gru"]
        if via in ("bidirectional", "stacked"):
            layer = rx.bidirectional(cell, cell) if via == "bidirectional" else rx.stacked([cell, cell])
            params = random_params(layer, 0, I)

            def run(lengths):
                return layer.apply(params, XS, lengths=lengths)

        elif via.startswith("linen"):
            from recurrax.flax.linen import RNN

            module = RNN(cell, return_state=True)
            variables = {"params": {"cell": PARAMS["gru"]}}  # the adapter's param is the cell's params

            def run(lengths):
                return module.apply(variables, XS, lengths=lengths, reverse=via == "linen_reverse")

        else:

            def run(lengths):
                return rx.reverse_sequences(jnp.moveaxis(XS, 1, 0), lengths)

        got = jax.jit(run)(jnp.array(OUT_OF_RANGE))
        assert _finite(got)
        _close(got, _jit(lambda: run(np.array(CLAMPED))))  # concrete lengths: the checked, unclamped path


# ================================================================================================ 7. resets


class TestResets:
    @pytest.mark.parametrize(
        "resets,exc,shown",
        [
            (np.zeros((B, T), np.int32), TypeError, ("boolean", "int32")),
            (np.zeros((B, T), np.float32), TypeError, ("boolean", "float32")),
            (np.zeros((B, T + 1), bool), ValueError, ("(2, 4)", "(2, 5)")),
            (np.zeros((T, B), bool), ValueError, ("(2, 4)", "(4, 2)")),
            (np.zeros((B,), bool), ValueError, ("(2, 4)", "(2,)")),
        ],
        ids=["int32", "float32", "too_long", "time_major_layout", "no_time_axis"],
    )
    @pytest.mark.parametrize("name", ["gru", "lstm", "min_gru"])
    def test_bad_resets(self, name, resets, exc, shown):
        with _raises(exc, "`resets`", *shown):
            rx.scan(CELLS[name], PARAMS[name], XS, resets=resets)

    def test_time_major_resets_of_the_batch_major_layout(self):
        with _raises(ValueError, "`resets`", "(T, *batch)", "(4, 2)", "(2, 4)"):
            rx.scan(CELLS["gru"], PARAMS["gru"], jnp.moveaxis(XS, 1, 0), time_major=True, resets=np.zeros((B, T), bool))

    @pytest.mark.parametrize("name", ["gru", "lstm"])
    def test_reset_state_without_resets(self, name):
        state = CELLS[name].initial_state(PARAMS[name], ())
        with _raises(ValueError, "`reset_state`", "`resets`"):
            rx.scan(CELLS[name], PARAMS[name], XS, reset_state=state)

    @pytest.mark.parametrize("shape", [(B + 1, H), (H + 1,), (1, B, H)], ids=str)
    def test_reset_state_of_the_wrong_shape(self, shape):
        with _raises(ValueError, "`reset_state.h`", f"({H},)", f"({B}, {H})", str(shape)):
            rx.scan(CELLS["gru"], PARAMS["gru"], XS, resets=np.zeros((B, T), bool), reset_state=rx.RNNState(_z(*shape)))

    @pytest.mark.parametrize(
        "resets,exc",
        [(np.array([1, 0], np.int32), TypeError), (np.array([1.0, 0.0]), TypeError)],
        ids=["int32", "float"],
    )
    def test_reset_with_non_bool_resets(self, resets, exc):
        state = CELLS["gru"].initial_state(PARAMS["gru"], (B,))
        with _raises(exc, "`resets`", "boolean"):
            rx.reset(CELLS["gru"], PARAMS["gru"], state, resets)

    def test_reset_with_resets_of_another_batch(self):
        state = CELLS["gru"].initial_state(PARAMS["gru"], (B,))
        with _raises(ValueError, "`resets`"):
            rx.reset(CELLS["gru"], PARAMS["gru"], state, np.zeros((B + 1,), bool))


# ======================================================================================= 8. NaN propagation

NAN_CASES = [(name, b) for name in ("elman", "gru", "lstm", "min_gru") for b in _runnable(name)]
W_H_CASES = [(name, b) for name, b in NAN_CASES if "w_h" in PARAMS[name]]
SATURATED = [(name, b) for name in ("lstm", "gru") for b in _runnable(name)]
_ids = [f"{c}-{b}" for c, b in NAN_CASES]


def _scan(name, backend, xs=XS, state=None, params=None, **kw):
    params = PARAMS[name] if params is None else params
    return rx.scan(CELLS[name], params, xs, state, backend=backend, **kw)


@functools.cache
def _compiled(name, backend):
    """``scan(CELLS[name], params, xs, state, backend=backend)`` jitted once, for every value the tests give it."""
    return jax.jit(lambda params, xs, state: rx.scan(CELLS[name], params, xs, state, backend=backend))


def _run(name, backend, xs=XS, state=None, params=None):
    state = CELLS[name].initial_state(PARAMS[name], (B,)) if state is None else state
    return _compiled(name, backend)(PARAMS[name] if params is None else params, xs, state)


def _nan_state(name):
    """The zero state with row 0 of its first leaf (h; x for the LRU) NaN."""
    state = CELLS[name].initial_state(PARAMS[name], (B,))
    first = state._fields[0]
    return state._replace(**{first: getattr(state, first).at[0].set(NAN)})


@functools.cache
def _nan_reference(name, where):
    if where == "x":
        return _run(name, "sequential", XS.at[0, 1, 0].set(NAN))
    return _run(name, "sequential", state=_nan_state(name))


class TestNaNPropagation:
    @pytest.mark.parametrize("name,backend", NAN_CASES, ids=_ids)
    def test_nan_in_one_input(self, name, backend):
        xs = XS.at[0, 1, 0].set(NAN)
        final, ys = _run(name, backend, xs)
        ys = np.asarray(ys)
        assert np.isnan(ys[0, 1:]).all(), "row 0 must be NaN from t=1 on"
        assert np.isfinite(ys[0, :1]).all() and np.isfinite(ys[1]).all(), "only row 0 from t=1 on may be NaN"
        assert all(np.isnan(np.asarray(s)[0]).all() and np.isfinite(np.asarray(s)[1]).all() for s in final)
        _close((final, ys), _nan_reference(name, "x"))

    @pytest.mark.parametrize("name,backend", W_H_CASES, ids=[f"{c}-{b}" for c, b in W_H_CASES])
    def test_nan_in_a_recurrent_weight(self, name, backend):
        params = dict(PARAMS[name], w_h=PARAMS[name]["w_h"].at[0].set(NAN))  # row 0: every gate column
        final, ys = _run(name, backend, params=params)
        assert np.isnan(np.asarray(ys)).all()
        assert all(np.isnan(np.asarray(s)).all() for s in final)

    @pytest.mark.parametrize("name,backend", NAN_CASES, ids=_ids)
    def test_nan_in_the_initial_state(self, name, backend):
        final, ys = _run(name, backend, state=_nan_state(name))
        ys = np.asarray(ys)
        assert np.isnan(ys[0]).all() and np.isfinite(ys[1]).all()
        _close((final, ys), _nan_reference(name, "state"))

    @pytest.mark.parametrize("name,backend", SATURATED, ids=[f"{c}-{b}" for c, b in SATURATED])
    def test_saturated_inputs_match_float64(self, name, backend):
        xs = XS * 1e4
        step = {"lstm": ref.lstm, "gru": ref.gru}[name]
        state0 = tuple(np.zeros((B, H)) for _ in CELLS[name].initial_state(PARAMS[name], (B,)))
        final64, ys64, _ = ref.run(step, ref.to_numpy(PARAMS[name]), np.asarray(xs), state0)

        def error(backend):
            final, ys = _run(name, backend, xs)
            assert _finite((final, ys))
            return max(
                np.abs(np.asarray(ys) - ys64).max(), *(np.abs(np.asarray(a) - b).max() for a, b in zip(final, final64))
            )

        assert error(backend) <= 2 * error("sequential") + 1e-6


# ============================================================================================ 9. padded steps

PAD_CASES = [(name, b, False) for name in ("lstm", "gru", "min_gru") for b in _runnable(name)]
PAD_LENGTHS = np.array([T - 1, 1])


def _dirty(xs):
    """``xs`` with NaN and infinities in every padded step (past ``PAD_LENGTHS``)."""
    return xs.at[0, T - 1].set(NAN).at[1, 1].set(INF).at[1, 2].set(-INF).at[1, 3, 0].set(NAN)


class TestPaddedSteps:
    @pytest.mark.parametrize(
        "name,backend,reverse", PAD_CASES, ids=[f"{c}-{b}-{'rev' if r else 'fwd'}" for c, b, r in PAD_CASES]
    )
    def test_padding_reaches_neither_outputs_nor_gradients(self, name, backend, reverse):
        cell = CELLS[name]

        def loss(params, xs):
            final, ys = rx.scan(cell, params, xs, lengths=PAD_LENGTHS, reverse=reverse, backend=backend)
            return ys.sum() + sum(s.sum() for s in final), (final, ys)

        run = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        clean = XS.at[0, T - 1 :].set(0.0).at[1, 1:].set(0.0)
        (_, out), grads = run(PARAMS[name], _dirty(XS))
        (_, out_clean), grads_clean = run(PARAMS[name], clean)
        assert _finite(out) and _finite(grads)
        _close(out, out_clean)
        _close(grads, grads_clean)
        assert not np.asarray(grads[1])[1, 1:].any(), "no gradient reaches a padded input"


# ======================================================================================== 10. degenerate sizes

ZERO_T_BACKENDS = [
    ("lstm", "native_lstm"),
    ("lstm", "xla_lstm"),
    ("gru", "native_gru"),
    ("min_gru", "associative"),
    ("min_gru", "chunked"),
]


def _gru_loss(params, state, chunk):
    final, ys = rx.scan(CELLS["gru"], params, chunk, state)
    return jnp.mean(ys**2), final


class TestDegenerateSizes:
    @pytest.mark.parametrize("name,backend", [(n, "auto") for n in CELLS] + ZERO_T_BACKENDS, ids=lambda v: str(v))
    def test_zero_steps(self, name, backend):
        cell, params = CELLS[name], PARAMS[name]
        state = ref.random_state(cell, params, (B,), 3)
        final, ys, states = rx.scan(
            cell, params, jnp.zeros((B, 0, I)), state, backend=backend, return_states=True, include_initial=True
        )
        _close(final, state)
        assert ys.shape == (B, 0, OUT[name])
        _close(states, jax.tree.map(lambda s: s[:, None], state))

    def test_zero_steps_with_lengths(self):
        final, ys = rx.scan(CELLS["gru"], PARAMS["gru"], jnp.zeros((B, 0, I)), lengths=np.zeros(B, int))
        assert ys.shape == (B, 0, H) and not np.asarray(final.h).any()

    @pytest.mark.parametrize("name,backend", [(n, "auto") for n in CELLS] + ZERO_T_BACKENDS, ids=lambda v: str(v))
    def test_empty_batch(self, name, backend):
        cell, params = CELLS[name], PARAMS[name]
        final, ys = _jit(lambda: rx.scan(cell, params, jnp.zeros((0, T, I)), backend=backend))
        assert ys.shape == (0, T, OUT[name])
        want = jax.eval_shape(lambda p: cell.initial_state(p, (0,)), params)
        assert [s.shape for s in jax.tree.leaves(final)] == [s.shape for s in jax.tree.leaves(want)]

    @pytest.mark.parametrize("fn", ["checkpointed_scan", "truncated_scan", "sequence_parallel_scan"])
    def test_zero_steps_in_the_long_sequence_helpers(self, fn):
        name = "min_gru" if fn == "sequence_parallel_scan" else "gru"
        cell, params = CELLS[name], PARAMS[name]
        state = ref.random_state(cell, params, (B,), 3)
        xs = jnp.zeros((B, 0, I))
        call = {
            "checkpointed_scan": lambda: ls.checkpointed_scan(cell, params, xs, state),
            "truncated_scan": lambda: ls.truncated_scan(cell, params, xs, state, chunk_size=2),
            "sequence_parallel_scan": lambda: sequence_parallel_scan(cell, params, xs, state, mesh=_mesh()),
        }[fn]
        _same_or_raises(call, rx.scan(cell, params, xs, state), "`xs`")

    def test_zero_steps_in_tbptt(self):
        params, state = PARAMS["gru"], ref.random_state(CELLS["gru"], PARAMS["gru"], (B,), 3)
        opt = optax.sgd(0.1)
        want = (params, opt.init(params), state, jnp.zeros((0,)))
        _same_or_raises(
            lambda: ls.tbptt(_gru_loss, opt, params, opt.init(params), state, jnp.zeros((B, 0, I)), chunk_size=2),
            want,
            "`data`",
        )

    @pytest.mark.parametrize("fn", ["checkpointed_scan", "truncated_scan"])
    @pytest.mark.parametrize("size", [T + 3])
    def test_segment_longer_than_the_sequence(self, fn, size):
        cell, params = CELLS["gru"], PARAMS["gru"]
        arg = "segment_size" if fn == "checkpointed_scan" else "chunk_size"
        call = lambda: getattr(ls, fn)(cell, params, XS, lengths=np.array([T, 2]), **{arg: size})  # noqa: E731
        _same_or_raises(
            lambda: _jit(call), _jit(lambda: rx.scan(cell, params, XS, lengths=np.array([T, 2]))), f"`{arg}`"
        )

    def test_tbptt_chunk_longer_than_the_sequence(self):
        params, state, opt = PARAMS["gru"], CELLS["gru"].initial_state(PARAMS["gru"], (B,)), optax.sgd(0.1)
        (loss, final), grads = jax.jit(jax.value_and_grad(_gru_loss, has_aux=True))(params, state, XS)
        updates, opt_state = opt.update(grads, opt.init(params), params)
        want = (optax.apply_updates(params, updates), opt_state, final, loss[None])
        call = lambda: ls.tbptt(_gru_loss, opt, params, opt.init(params), state, XS, chunk_size=T + 3)  # noqa: E731
        _same_or_raises(lambda: _jit(call), want, "`chunk_size`")

    @pytest.mark.parametrize("size", [0, -1, 2.5, True], ids=str)
    @pytest.mark.parametrize("fn", ["checkpointed_scan", "truncated_scan", "tbptt"])
    def test_bad_segment_size(self, fn, size):
        cell, params = CELLS["gru"], PARAMS["gru"]
        if fn == "checkpointed_scan":
            arg, call = "segment_size", lambda: ls.checkpointed_scan(cell, params, XS, segment_size=size)
        elif fn == "truncated_scan":
            arg, call = "chunk_size", lambda: ls.truncated_scan(cell, params, XS, chunk_size=size)
        else:
            state, opt = cell.initial_state(params, (B,)), optax.sgd(0.1)
            arg = "chunk_size"

            def call():
                return ls.tbptt(_gru_loss, opt, params, opt.init(params), state, XS, chunk_size=size)

        with _raises(ValueError, f"`{arg}`", repr(size)):
            call()

    @pytest.mark.parametrize(
        "name,steps,lengths",
        [("min_gru", 1, None), ("min_gru", 3, None), ("min_lstm", T, [T, 1]), ("lru", 3, None)],
        ids=str,
    )
    def test_chunked_shorter_than_a_chunk(self, name, steps, lengths):
        xs = XS[:, :steps]
        lengths = None if lengths is None else np.array(lengths)
        got = _jit(lambda: _scan(name, "chunked", xs, lengths=lengths))
        _close(got, _jit(lambda: _scan(name, "sequential", xs, lengths=lengths)))


def _mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:1]), ("time",))


# ================================================================================================ 11. layers


class TestLayers:
    @pytest.mark.parametrize("layers", [[], ()], ids=["list", "tuple"])
    def test_empty_stack(self, layers):
        with _raises(ValueError, "`layers`", "empty"):
            rx.stacked(layers)

    @pytest.mark.parametrize("merge", ["sum", "mul", "ave"])
    def test_merge_that_would_broadcast(self, merge):
        layer = rx.bidirectional(rx.gru(8), rx.gru(1), merge=merge)
        with _raises(ValueError, "`merge`", "8", "1"):
            layer.apply(random_params(layer, 0, I), XS)

    def test_concat_of_different_sizes(self):
        layer = rx.bidirectional(rx.gru(8), rx.gru(1))
        params = random_params(layer, 0, I)
        _, ys = _jit(lambda: layer.apply(params, XS))
        _, ys_f = _jit(lambda: rx.scan(rx.gru(8), params["forward"], XS))
        _, ys_b = _jit(lambda: rx.scan(rx.gru(1), params["backward"], XS, reverse=True))
        _close(ys, jnp.concatenate([ys_f, ys_b], -1))

    @pytest.mark.parametrize(
        "params",
        [(PARAMS["gru"],), (PARAMS["gru"],) * 3, PARAMS["gru"], {"0": PARAMS["gru"], "1": PARAMS["gru"]}],
        ids=["one", "three", "cell_params", "dict"],
    )
    def test_stack_params_of_the_wrong_length(self, params):
        with _raises(ValueError, "`params`", "one entry per layer (2)"):
            rx.stacked([CELLS["gru"], CELLS["gru"]]).apply(params, XS)

    @pytest.mark.parametrize(
        "params",
        [{"forward": PARAMS["gru"]}, (PARAMS["gru"], PARAMS["gru"]), PARAMS["gru"]],
        ids=["no_backward", "tuple", "cell_params"],
    )
    def test_bidirectional_params_of_the_wrong_structure(self, params):
        with pytest.raises((ValueError, TypeError), match=_m("`params`")):
            rx.bidirectional(CELLS["gru"], CELLS["gru"]).apply(params, XS)

    def test_stack_state_of_the_wrong_length(self):
        layer = rx.stacked([CELLS["gru"], CELLS["gru"]])
        with _raises(ValueError, "`state`", "one entry per layer (2)", "length 1"):
            layer.apply((PARAMS["gru"],) * 2, XS, (CELLS["gru"].initial_state(PARAMS["gru"], (B,)),))

    def test_bidirectional_given_a_cell_state(self):
        layer = rx.bidirectional(CELLS["gru"], CELLS["gru"])
        params = {"forward": PARAMS["gru"], "backward": PARAMS["gru"]}
        with pytest.raises((ValueError, TypeError), match=_m("`state`")):
            layer.apply(params, XS, CELLS["gru"].initial_state(PARAMS["gru"], (B,)))

    def test_stack_reset_state_of_the_wrong_length(self):
        layer = rx.stacked([CELLS["gru"], CELLS["gru"]])
        with _raises(ValueError, "`reset_state`", "one entry per layer (2)"):
            layer.apply((PARAMS["gru"],) * 2, XS, resets=np.zeros((B, T), bool), reset_state=())


# ============================================================================================== 12. dynamics

PG, GRU = PARAMS["gru"], CELLS["gru"]
XS1, XV = XS[0], X1[0]  # one example: (T, I) and (I,)
WIDE = rx.RNNState(jnp.zeros(H + 1))
DYN_STATE = {
    "step_jacobian": lambda s: dyn.step_jacobian(GRU, PG, s, XV),
    "input_jacobian": lambda s: dyn.input_jacobian(GRU, PG, s, XV),
    "speed": lambda s: dyn.speed(GRU, PG, s, XV),
    "linearize": lambda s: dyn.linearize(GRU, PG, s, XV),
    "retention_gate": lambda s: dyn.retention_gate(GRU, PG, s, XV),
    "trajectory": lambda s: dyn.trajectory(GRU, PG, XS1, s),
    "step_jacobians": lambda s: dyn.step_jacobians(GRU, PG, XS1, s),
    "input_jacobians": lambda s: dyn.input_jacobians(GRU, PG, XS1, s),
    "gate_timescales": lambda s: dyn.gate_timescales(GRU, PG, XS1, s),
    "lyapunov_spectrum": lambda s: dyn.lyapunov_spectrum(GRU, PG, XS1, s, k=1),
    "perturbation_response": lambda s: dyn.perturbation_response(GRU, PG, XS1, rx.RNNState(jnp.zeros(H)), state=s),
    "gradient_flow": lambda s: dyn.gradient_flow(GRU, PG, XS1, lambda f: f.h.sum(), s),
    "jacobian_product_norms": lambda s: dyn.jacobian_product_norms(GRU, PG, XS1, s),
    "minimize_speed": lambda s: dyn.minimize_speed(GRU, PG, XV, jax.tree.map(lambda a: a[None], s), num_steps=1),
}


class TestDynamics:
    @pytest.mark.parametrize("fn", list(DYN_STATE))
    def test_state_of_the_wrong_feature_size(self, fn):
        with _raises(ValueError, "`state", str(H), str(H + 1)):
            DYN_STATE[fn](WIDE)

    @pytest.mark.parametrize("fn", ["trajectory", "lyapunov_spectrum", "gradient_flow", "step_jacobians"])
    @pytest.mark.parametrize(
        "xs,shown", [(XS, "(T, I)"), (jnp.ones((T, I + 1)), f"(..., {I})")], ids=["batched", "features"]
    )
    def test_bad_example_inputs(self, fn, xs, shown):
        call = {
            "trajectory": lambda: dyn.trajectory(GRU, PG, xs),
            "lyapunov_spectrum": lambda: dyn.lyapunov_spectrum(GRU, PG, xs),
            "gradient_flow": lambda: dyn.gradient_flow(GRU, PG, xs, lambda f: f.h.sum()),
            "step_jacobians": lambda: dyn.step_jacobians(GRU, PG, xs),
        }[fn]
        with _raises(ValueError, "`xs`", shown):
            call()

    @pytest.mark.parametrize("shape", [(3, 4), (4,)], ids=str)
    @pytest.mark.parametrize("fn", ["linearize_matrix", "jacobian_timescales"])
    def test_non_square_matrix(self, fn, shape):
        with _raises(ValueError, "`matrix`", str(shape)):
            getattr(dyn, fn)(jnp.ones(shape))

    def test_lyapunov_of_no_steps_blames_the_sequence(self):
        with pytest.raises(ValueError, match=_m("`xs`", "T=0")) as info:
            dyn.lyapunov_spectrum(GRU, PG, jnp.zeros((0, I)), burn_in=0)
        assert "burn_in" not in str(info.value)

    @pytest.mark.parametrize("k", [0, -1, H + 1, 1.5, True], ids=str)
    def test_lyapunov_k(self, k):
        with _raises(ValueError, "`k`", f"S={H}", repr(k)):
            dyn.lyapunov_spectrum(GRU, PG, XS1, k=k)

    @pytest.mark.parametrize("burn_in", [T, -1, 1.5, T + 5], ids=str)
    def test_lyapunov_burn_in(self, burn_in):
        with _raises(ValueError, "`burn_in`", f"T={T}", repr(burn_in)):
            dyn.lyapunov_spectrum(GRU, PG, XS1, burn_in=burn_in)

    def test_lyapunov_on_nonfinite(self):
        with _raises(ValueError, "`on_nonfinite`", "'ignore'"):
            dyn.lyapunov_spectrum(GRU, PG, XS1, on_nonfinite="ignore")

    def test_product_norms_method(self):
        with _raises(ValueError, "`method`", "'svd'"):
            dyn.jacobian_product_norms(GRU, PG, XS1, method="svd")

    @pytest.mark.parametrize("num_iters", [0])
    def test_product_norms_num_iters(self, num_iters):
        with _raises(ValueError, "`num_iters`", repr(num_iters)):
            dyn.jacobian_product_norms(GRU, PG, XS1[:2], method="power", num_iters=num_iters)

    @pytest.mark.parametrize("t0", [-1, T + 1])
    def test_perturbation_t0(self, t0):
        with _raises(ValueError, "`t0`", f"T={T}", str(t0)):
            dyn.perturbation_response(GRU, PG, XS1, rx.RNNState(jnp.ones(H)), t0=t0)

    def test_perturbation_of_the_wrong_shape(self):
        with _raises(ValueError, "`perturbation`", f"({H},)", f"({H + 1},)"):
            dyn.perturbation_response(GRU, PG, XS1, WIDE)

    def test_field_perturbation_unknown_field(self):
        with _raises(ValueError, "`field`", "'c'"):
            dyn.field_perturbation(rx.RNNState(jnp.zeros(H)), "c", jnp.ones(H))

    def test_gradient_flow_loss_not_scalar(self):
        with _raises(ValueError, "`loss_fn`", "scalar", f"({H},)"):
            dyn.gradient_flow(GRU, PG, XS1, lambda f: f.h)

    @pytest.mark.parametrize("arg", ["num_steps", "newton_steps"])
    def test_minimize_speed_negative_steps(self, arg):
        starts = rx.RNNState(jnp.zeros((2, H)))
        with _raises(ValueError, f"`{arg}`", "-1"):
            dyn.minimize_speed(GRU, PG, XV, starts, **{"num_steps": 1, arg: -1})

    def test_retention_gate_of_an_unsupported_cell(self):
        with _raises(ValueError, "'elman'"):
            dyn.retention_gate(CELLS["elman"], PARAMS["elman"], rx.RNNState(jnp.zeros(H)), XV)


# =============================================================================================== 13. interop


def _torch():
    return pytest.importorskip("torch")


class TestInteropTorch:
    @pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
    def test_module_on_the_meta_device(self, kind):
        torch = _torch()
        from recurrax.interop.torch import from_torch

        module = getattr(torch.nn, kind)(I, H, device="meta")
        with pytest.raises((ValueError, TypeError), match="meta"):
            from_torch(module)

    @pytest.mark.parametrize("kind", ["LSTM", "GRU"])
    def test_module_in_bfloat16(self, kind):
        """Either refused, naming the dtype, or converted exactly (bfloat16 params holding the same weights)."""
        torch = _torch()
        from recurrax.interop.torch import from_torch

        torch.manual_seed(0)
        module = getattr(torch.nn, kind)(I, H).to(torch.bfloat16)
        try:
            _, params = from_torch(module)
        except (ValueError, TypeError) as err:
            assert "bfloat16" in str(err), err
            return
        assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
        w_ih = module.weight_ih_l0.detach().float().numpy()
        np.testing.assert_array_equal(np.asarray(params["w_i"], np.float32), w_ih.T)

    @pytest.mark.parametrize("make", ["Linear", "Conv1d", "Transformer"])
    def test_unsupported_module(self, make):
        torch = _torch()
        from recurrax.interop.torch import from_torch

        module = {
            "Linear": lambda: torch.nn.Linear(I, H),
            "Conv1d": lambda: torch.nn.Conv1d(I, H, 3),
            "Transformer": lambda: torch.nn.TransformerEncoderLayer(4, 2, 8),
        }[make]()
        with _raises(TypeError, type(module).__name__):
            from_torch(module)

    @pytest.mark.parametrize("route", ["scan", "step", "project", "tensors"])
    def test_torch_layout_params(self, route):
        torch = _torch()
        state_dict = torch.nn.LSTM(I, H).state_dict()
        params = {k: v.numpy() for k, v in state_dict.items()} if route != "tensors" else dict(state_dict)
        cell = CELLS["lstm"]
        if route == "tensors":
            with _raises(TypeError, "`params['bias_hh_l0']`", "torch", "from_torch"):
                rx.scan(cell, params, XS)
            return
        with pytest.raises(ValueError, match=_m("`params`", "w_i")) as info:
            if route == "scan":
                rx.scan(cell, params, XS)
            elif route == "step":
                cell.step(params, cell.initial_state(PARAMS["lstm"], (B,)), X1)
            else:
                cell.project(params, XS)
        assert "`x`" not in str(info.value)

    @pytest.mark.parametrize(
        "kind,h0,c0,arg",
        [("GRU", (2, B, H), None, "h0"), ("LSTM", (1, B, H), None, "c0"), ("GRU", (1, B, H), (1, B, H), "c0")],
        ids=["h0_layers", "lstm_without_c0", "gru_with_c0"],
    )
    def test_state_from_torch(self, kind, h0, c0, arg):
        torch = _torch()
        from recurrax.interop.torch import state_from_torch

        module = getattr(torch.nn, kind)(I, H)
        with _raises(ValueError, f"`{arg}`"):
            state_from_torch(module, np.zeros(h0), None if c0 is None else np.zeros(c0))
