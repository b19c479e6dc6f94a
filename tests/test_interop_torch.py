"""Parity with PyTorch's nn.RNN / nn.LSTM / nn.GRU given the same weights (the reference implementation)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax.interop import from_torch, state_from_torch, state_to_torch, to_torch

torch = pytest.importorskip("torch")

B, T, I, H = 3, 9, 5, 7
LENGTHS = np.array([9, 4, 1])
TOL = dict(atol=1e-5, rtol=1e-5)


def _module(kind, **kwargs):
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    return cls(I, H, batch_first=True, **kwargs).eval()


def _run(layer, params, xs, state=None, lengths=None):
    if isinstance(layer, rx.Cell):
        return rx.scan(layer, params, xs, state, lengths=lengths)
    return layer.apply(params, xs, state, lengths=lengths)


def _torch_states(module, kind, rng):
    num = module.num_layers * (2 if module.bidirectional else 1)
    out_size = module.proj_size if kind == "lstm" and module.proj_size else H
    h0 = rng.standard_normal((num, B, out_size)).astype(np.float32)
    c0 = rng.standard_normal((num, B, H)).astype(np.float32) if kind == "lstm" else None
    return h0, c0


CONFIGS = [
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}),
    ("lstm", {}),
    ("lstm", {"proj_size": 4}),
    ("lstm", {"bias": False}),
    ("gru", {}),
    ("gru", {"bias": False}),
    ("rnn", {"num_layers": 2}),
    ("lstm", {"num_layers": 2, "dropout": 0.3}),
    ("gru", {"num_layers": 3}),
    ("rnn", {"bidirectional": True}),
    ("lstm", {"bidirectional": True}),
    ("gru", {"bidirectional": True}),
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 4}),
    ("gru", {"num_layers": 2, "bidirectional": True}),
]


@pytest.mark.parametrize("kind,kwargs", CONFIGS, ids=[f"{k}-{kw}" for k, kw in CONFIGS])
def test_outputs_and_final_state_match_torch(kind, kwargs):
    module = _module(kind, **kwargs)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((B, T, I)).astype(np.float32)
    h0, c0 = _torch_states(module, kind, rng)
    init = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        ys_ref, final_ref = module(torch.from_numpy(xs), init)
    finals_ref = final_ref if kind == "lstm" else (final_ref,)

    layer, params = from_torch(module)
    state = state_from_torch(module, h0, c0)
    final, ys = _run(layer, params, jnp.asarray(xs), state)
    np.testing.assert_allclose(ys, ys_ref.numpy(), **TOL)
    for got, want in zip(state_to_torch(module, final), finals_ref, strict=True):
        np.testing.assert_allclose(got, want.numpy(), **TOL)


@pytest.mark.parametrize(
    "kind,kwargs",
    [("lstm", {}), ("gru", {"bidirectional": True}), ("lstm", {"num_layers": 2, "bidirectional": True})],
)
def test_lengths_match_packed_sequences(kind, kwargs):
    module = _module(kind, **kwargs)
    xs = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(xs), torch.from_numpy(LENGTHS), batch_first=True)
    with torch.no_grad():
        out, final_ref = module(packed)
    ys_ref, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    finals_ref = final_ref if kind == "lstm" else (final_ref,)

    layer, params = from_torch(module)
    final, ys = _run(layer, params, jnp.asarray(xs), lengths=jnp.asarray(LENGTHS))
    np.testing.assert_allclose(ys, ys_ref.numpy(), **TOL)
    for got, want in zip(state_to_torch(module, final), finals_ref, strict=True):
        np.testing.assert_allclose(got, want.numpy(), **TOL)


def test_time_major_module():
    module = torch.nn.LSTM(I, H, batch_first=False).eval()
    xs = np.random.default_rng(3).standard_normal((T, B, I)).astype(np.float32)
    with torch.no_grad():
        ys_ref, _ = module(torch.from_numpy(xs))
    cell, params = from_torch(module)
    _, ys = rx.scan(cell, params, jnp.asarray(xs), time_major=True)
    np.testing.assert_allclose(ys, ys_ref.numpy(), **TOL)


def test_gradients_match_torch():
    module = _module("gru")
    xs = np.random.default_rng(4).standard_normal((B, T, I)).astype(np.float32)
    xt = torch.from_numpy(xs).requires_grad_(True)
    ys, _ = module(xt)
    (ys**2).sum().backward()

    cell, params = from_torch(module)
    grad_x = jax.grad(lambda x: jnp.sum(rx.scan(cell, params, x)[1] ** 2))(jnp.asarray(xs))
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), atol=1e-4, rtol=1e-4)
    grads = jax.grad(lambda p: jnp.sum(rx.scan(cell, p, jnp.asarray(xs))[1] ** 2))(params)
    np.testing.assert_allclose(grads["w_h"], module.weight_hh_l0.grad.numpy().T, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(grads["b_hn"], module.bias_hh_l0.grad.numpy()[2 * H :], atol=1e-4, rtol=1e-4)


def test_float64_module_keeps_its_precision():
    module = _module("lstm").double()
    xs = np.random.default_rng(5).standard_normal((B, T, I))
    with torch.no_grad():
        ys_ref, _ = module(torch.from_numpy(xs))
    with jax.enable_x64(True):
        cell, params = from_torch(module)
        chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda _: jnp.zeros((), jnp.float64), params))
        _, ys = rx.scan(cell, params, jnp.asarray(xs))
        np.testing.assert_allclose(ys, ys_ref.numpy(), atol=1e-12, rtol=1e-12)


def test_a_float64_module_without_x64_is_refused_not_rounded():
    with pytest.raises(ValueError, match="float64, but JAX runs float32 while `jax_enable_x64` is off"):
        from_torch(_module("lstm").double())


def test_rejects_other_modules():
    with pytest.raises(TypeError, match=r"expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, .*got Linear"):
        from_torch(torch.nn.Linear(3, 4))


def test_state_from_torch_checks_shapes():
    module = _module("lstm", num_layers=2)
    with pytest.raises(ValueError, match=r"`h0` must have shape \(num_layers \* num_directions = 2"):
        state_from_torch(module, np.zeros((1, B, H)), np.zeros((2, B, H)))
    with pytest.raises(ValueError, match="`c0` is needed for an LSTM"):
        state_from_torch(module, np.zeros((2, B, H)))


# --------------------------------------------------------------------------------------------- to_torch
# Small and short: each case builds a module and runs it once.

STEPS = 5
EXACT = dict(atol=1e-6, rtol=1e-6)


def _torch_run(module, xs, init):
    with torch.no_grad():
        ys, final = module(torch.from_numpy(xs), init)
    return ys.numpy(), [f.numpy() for f in (final if isinstance(final, tuple) else (final,))]


def _as_torch_state(module, state):
    parts = [torch.from_numpy(np.array(p)) for p in state_to_torch(module, state)]
    return tuple(parts) if len(parts) == 2 else parts[0]


EXPORTS = {
    "rnn-tanh": lambda: rx.elman(H),
    "rnn-relu": lambda: rx.elman(H, activation=jax.nn.relu),
    "rnn-no-bias": lambda: rx.elman(H, use_bias=False),
    "lstm": lambda: rx.lstm(H),
    "lstm-proj": lambda: rx.lstm(H, proj_size=4),
    "lstm-no-bias": lambda: rx.lstm(H, use_bias=False),
    "gru": lambda: rx.gru(H),
    "gru-no-bias": lambda: rx.gru(H, use_bias=False),
    "rnn-2-layers": lambda: rx.stacked([rx.elman(H)] * 2, dropout=0.3),
    "gru-bidirectional": lambda: rx.bidirectional(rx.gru(H), rx.gru(H)),
    "lstm-proj-2-layers-bidirectional": lambda: rx.stacked(
        [rx.bidirectional(rx.lstm(H, proj_size=4), rx.lstm(H, proj_size=4))] * 2
    ),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_to_torch_computes_what_scan_computes(name):
    layer = EXPORTS[name]()
    params = layer.init(jax.random.key(0), I)
    module = to_torch(layer, params)
    assert module.batch_first and not module.training
    assert all(p.dtype == torch.float32 for p in module.parameters())
    rng = np.random.default_rng(6)
    xs = rng.standard_normal((B, STEPS, I)).astype(np.float32)
    state = jax.tree.map(
        lambda z: jnp.asarray(rng.standard_normal(z.shape), z.dtype), layer.initial_state(params, (B,))
    )
    ys_ref, finals_ref = _torch_run(module, xs, _as_torch_state(module, state))

    final, ys = _run(layer, params, jnp.asarray(xs), state)
    np.testing.assert_allclose(ys, ys_ref, **EXACT)
    for got, want in zip(state_to_torch(module, final), finals_ref, strict=True):
        np.testing.assert_allclose(got, want, **EXACT)
    # ... and back: the same params, bit for bit.
    chex.assert_trees_all_equal(from_torch(module)[1], params)


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {"proj_size": 4}),
        ("gru", {}),
        ("lstm", {"num_layers": 2, "dropout": 0.3}),
        ("gru", {"num_layers": 2, "bidirectional": True, "bias": False}),
    ],
)
def test_torch_round_trip(kind, kwargs):
    module = _module(kind, **kwargs)
    back = to_torch(*from_torch(module))
    for attr in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bidirectional",
        "bias",
        "batch_first",
        "dropout",
        "proj_size",
        "nonlinearity",
    ):
        assert getattr(back, attr, None) == getattr(module, attr, None), attr
    xs = np.random.default_rng(7).standard_normal((B, STEPS, I)).astype(np.float32)
    h0, c0 = _torch_states(module, kind, np.random.default_rng(8))
    init = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "lstm" else torch.from_numpy(h0)
    (ys_ref, finals_ref), (ys, finals) = _torch_run(module, xs, init), _torch_run(back, xs, init)
    np.testing.assert_allclose(ys, ys_ref, **EXACT)
    for got, want in zip(finals, finals_ref, strict=True):
        np.testing.assert_allclose(got, want, **EXACT)
    # The two biases are summed on the way in; once in to_torch's layout, a round trip is the identity.
    again = to_torch(*from_torch(back))
    chex.assert_trees_all_equal(
        {k: v.numpy() for k, v in again.state_dict().items()}, {k: v.numpy() for k, v in back.state_dict().items()}
    )


CELL_MODULES = {
    "RNNCell-tanh": lambda: torch.nn.RNNCell(I, H),
    "RNNCell-relu": lambda: torch.nn.RNNCell(I, H, nonlinearity="relu"),
    "LSTMCell": lambda: torch.nn.LSTMCell(I, H),
    "GRUCell": lambda: torch.nn.GRUCell(I, H),
    "GRUCell-no-bias": lambda: torch.nn.GRUCell(I, H, bias=False),
}


@pytest.mark.parametrize("name", list(CELL_MODULES))
def test_cell_modules_step_as_cell_step(name):
    torch.manual_seed(0)
    module = CELL_MODULES[name]()
    cell, params = from_torch(module)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((B, I)).astype(np.float32)
    state = jax.tree.map(lambda z: jnp.asarray(rng.standard_normal(z.shape), z.dtype), cell.initial_state(params, (B,)))
    assert jax.tree.structure(state_from_torch(module, *state_to_torch(module, state))) == jax.tree.structure(state)
    new = state_to_torch(module, cell.step(params, state, jnp.asarray(x)))

    back = to_torch(cell, params, module="cell")
    assert type(back) is type(module) and back.bias == module.bias
    assert getattr(back, "nonlinearity", None) == getattr(module, "nonlinearity", None)
    for torch_cell in (module, back):
        with torch.no_grad():
            out = torch_cell(torch.from_numpy(x), _as_torch_state(module, state))
        for got, want in zip(new, out if isinstance(out, tuple) else (out,), strict=True):
            np.testing.assert_allclose(got, want.numpy(), **EXACT)
    chex.assert_trees_all_equal(from_torch(back)[1], params)


def _refused(build):
    layer = build()
    return layer, layer.init(jax.random.key(0), I)


# Refused on how the cell or layer was built, before its params are read: no init needed.
BY_CONSTRUCTION = {"layer_norm", "peephole", "cell_clip", "reset_after", "reset_after-no-bias", "activation", "dtype"}
BY_CONSTRUCTION |= {"gate_activation", "gru_activation"}
BY_CONSTRUCTION |= {"mgu", "min_gru", "lru", "residual", "merge", "replaced"}


REFUSALS = {
    "layer_norm": (lambda: rx.lstm(H, layer_norm=True), r"no layer norm, but the lstm cell has `layer_norm=True`"),
    "peephole": (lambda: rx.lstm(H, peephole=True), r"no peepholes, but the lstm cell has `peephole=True`"),
    "cell_clip": (lambda: rx.lstm(H, cell_clip=3.0), r"no cell clip, but the lstm cell has `cell_clip=3.0`"),
    "reset_after": (
        lambda: rx.gru(H, reset_after=False),
        r"\(reset_after=True\), but the gru cell has `reset_after=False`",
    ),
    "reset_after-no-bias": (lambda: rx.gru(H, reset_after=False, use_bias=False), r"`reset_after=False`"),
    "activation": (lambda: rx.elman(H, activation=jax.nn.gelu), r"'tanh' or 'relu' .*`activation=gelu`"),
    "gate_activation": (
        lambda: rx.lstm(H, gate_activation=jax.nn.hard_sigmoid),
        r"torch.nn.LSTM computes with sigmoid, but the lstm cell has `gate_activation=hard_sigmoid`",
    ),
    "gru_activation": (
        lambda: rx.gru(H, activation=jax.nn.relu),
        r"torch.nn.GRU computes with tanh, but the gru cell has `activation=relu`",
    ),
    "dtype": (lambda: rx.lstm(H, dtype=jnp.bfloat16), r"compute `dtype=bfloat16`"),
    "mgu": (lambda: rx.mgu(H), r"no equivalent of recurrax's `mgu` cell"),
    "min_gru": (lambda: rx.min_gru(H), r"no equivalent of recurrax's `min_gru` cell"),
    "lru": (lambda: rx.lru(H, 4), r"no equivalent of recurrax's `lru` cell"),
    "residual": (lambda: rx.stacked([rx.gru(H)] * 2, residual=True), r"no residual connections.*`residual=True`"),
    "merge": (
        lambda: rx.bidirectional(rx.gru(H), rx.gru(H), merge="sum"),
        r"concatenates its directions.*`merge='sum'`",
    ),
    "bias": (
        lambda: rx.stacked([rx.lstm(H), rx.lstm(H, use_bias=False)]),
        r"one `bias` for every layer.*`params\[0\]` has True and `params\[1\]` False",
    ),
    "hidden_size": (
        lambda: rx.bidirectional(rx.gru(H), rx.gru(H + 1)),
        r"one `hidden_size` .*\['forward'\]` has 7 and .*\['backward'\]` 8",
    ),
    "cell": (lambda: rx.stacked([rx.lstm(H), rx.gru(H)]), r"one cell for every layer.*'lstm' and .* 'gru'"),
    "directions": (
        lambda: rx.stacked([rx.bidirectional(rx.gru(H), rx.gru(H)), rx.gru(H)]),
        r"bidirectional in every layer or in none",
    ),
    "replaced": (lambda: rx.gru(H)._replace(transition=lambda p, s, z: s), r"not the ones recurrax.gru builds"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_to_torch_refuses_what_torch_cannot_compute(name):
    build, match = REFUSALS[name]
    layer, params = (build(), None) if name in BY_CONSTRUCTION else _refused(build)
    with pytest.raises(ValueError, match=match):
        to_torch(layer, params)


def test_to_torch_module_option():
    cell, params = _refused(lambda: rx.lstm(H, proj_size=4))
    with pytest.raises(ValueError, match=r"torch.nn.LSTMCell has no projection, but the lstm cell has `proj_size=4`"):
        to_torch(cell, params, module="cell")
    layer, params = _refused(lambda: rx.stacked([rx.gru(H)] * 2))
    with pytest.raises(ValueError, match=r"`module='cell'` builds a torch.nn.GRUCell from one cell, .*2 layers"):
        to_torch(layer, params, module="cell")
    with pytest.raises(ValueError, match=r"`module` must be 'layer' or 'cell', got 'rnn'"):
        to_torch(cell, params, module="rnn")
    with pytest.raises(TypeError, match=r"`cell_or_layer` must be a recurrax.Cell or Layer, got Linear"):
        to_torch(torch.nn.Linear(2, 3), {})
    gru = rx.gru(H)
    with pytest.raises(ValueError, match=r"`params` does not fit its cell: gru: `params\['b'\]` must have shape"):
        to_torch(gru, {**gru.init(jax.random.key(0), I), "b": jnp.zeros(2)})


def test_to_torch_keeps_the_params_dtype():
    cell = rx.gru(H, param_dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), I)
    module = to_torch(cell, params)
    assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    chex.assert_trees_all_equal(from_torch(module)[1], params)
    mixed = {**params, "b": params["b"].astype(jnp.float32)}
    with pytest.raises(ValueError, match=r"one dtype .*`params` has dtype\(s\) \['bfloat16', 'float32'\]"):
        to_torch(cell, mixed)
