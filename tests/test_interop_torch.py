"""Parity with PyTorch's nn.RNN / nn.LSTM / nn.GRU given the same weights (the reference implementation)."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax.interop import from_torch, state_from_torch, state_to_torch

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

    import jax

    cell, params = from_torch(module)
    grad_x = jax.grad(lambda x: jnp.sum(rx.scan(cell, params, x)[1] ** 2))(jnp.asarray(xs))
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), atol=1e-4, rtol=1e-4)
    grads = jax.grad(lambda p: jnp.sum(rx.scan(cell, p, jnp.asarray(xs))[1] ** 2))(params)
    np.testing.assert_allclose(grads["w_h"], module.weight_hh_l0.grad.numpy().T, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(grads["b_hn"], module.bias_hh_l0.grad.numpy()[2 * H :], atol=1e-4, rtol=1e-4)


def test_float64_module_keeps_its_precision():
    import jax

    module = _module("lstm").double()
    xs = np.random.default_rng(5).standard_normal((B, T, I))
    with torch.no_grad():
        ys_ref, _ = module(torch.from_numpy(xs))
    with jax.enable_x64(True):
        cell, params = from_torch(module)
        chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda _: jnp.zeros((), jnp.float64), params))
        _, ys = rx.scan(cell, params, jnp.asarray(xs))
        np.testing.assert_allclose(ys, ys_ref.numpy(), atol=1e-12, rtol=1e-12)


def test_rejects_other_modules():
    with pytest.raises(TypeError, match=r"expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got Linear"):
        from_torch(torch.nn.Linear(3, 4))


def test_state_from_torch_checks_shapes():
    module = _module("lstm", num_layers=2)
    with pytest.raises(ValueError, match=r"`h0` must have shape \(num_layers \* num_directions = 2"):
        state_from_torch(module, np.zeros((1, B, H)), np.zeros((2, B, H)))
    with pytest.raises(ValueError, match="`c0` is needed for an LSTM"):
        state_from_torch(module, np.zeros((2, B, H)))
