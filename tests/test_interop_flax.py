"""recurrax.interop.flax: converted weights compute what Flax's own cells compute.

References: ``flax.linen.LSTMCell`` / ``OptimizedLSTMCell`` / ``GRUCell`` (single steps and
``flax.linen.RNN`` over a sequence) and the ``flax.nnx`` cells of the same names, with all params
randomised so every bias matters.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recurrax as rx
from recurrax.interop import flax as rx_flax

B, T, I, H = 3, 7, 5, 4
XS = jax.random.normal(jax.random.key(1), (B, T, I))
TOL = {"atol": 1e-5, "rtol": 1e-5}
LINEN = [nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell]
NNX = [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell]


def _randomise(tree, seed=0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([0.5 * jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)])


def _flax_carry(is_lstm, seed=3):
    """A non-zero initial carry in Flax's layout ((c, h) for the LSTM) and the recurrax state."""
    k_h, k_c = jax.random.split(jax.random.key(seed))
    h, c = jax.random.normal(k_h, (B, H)), jax.random.normal(k_c, (B, H))
    return ((c, h), rx.LSTMState(h, c)) if is_lstm else (h, rx.RNNState(h))


def _linen_variables(module_cls, seed=0):
    module = module_cls(H)
    carry, _ = _flax_carry(module_cls is not nn.GRUCell)
    return module, _randomise(module.init(jax.random.key(0), carry, XS[:, 0]), seed)


def _rx_final(state, is_lstm):
    return (state.c, state.h) if is_lstm else state.h


def _assert_same_as_linen(module, variables, cell, params, is_lstm):
    """One step (``module.apply``) and a sequence (``flax.linen.RNN``) from a non-zero carry agree."""
    carry, state = _flax_carry(is_lstm)
    _, y = module.apply(variables, carry, XS[:, 0])
    chex.assert_trees_all_close(cell.step(params, state, XS[:, 0]).h, y, **TOL)
    flax_final, flax_ys = nn.RNN(module, return_carry=True).apply(
        {"params": {"cell": variables["params"]}}, XS, initial_carry=carry
    )
    rx_final, rx_ys = rx.scan(cell, params, XS, state)
    chex.assert_trees_all_close(rx_ys, flax_ys, **TOL)
    chex.assert_trees_all_close(_rx_final(rx_final, is_lstm), flax_final, **TOL)


@pytest.mark.parametrize("module_cls", LINEN, ids=lambda c: c.__name__)
def test_from_linen_matches_flax_step_and_sequence(module_cls):
    is_lstm = module_cls is not nn.GRUCell
    module, variables = _linen_variables(module_cls)
    cell, params = rx_flax.from_linen(module, variables)
    _assert_same_as_linen(module, variables, cell, params, is_lstm)


@pytest.mark.parametrize("factory", [rx.lstm, rx.gru], ids=["lstm", "gru"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_recurrax_cells_equal_flax_linen_cells(factory, use_bias):
    """Issue-2 parity: rx.lstm / rx.gru equal flax.linen.LSTMCell / GRUCell with converted params."""
    is_lstm = factory is rx.lstm
    cell = factory(H, use_bias=use_bias)
    params = cell.init(jax.random.key(2), I)
    module = nn.LSTMCell(H) if is_lstm else nn.GRUCell(H)
    _assert_same_as_linen(module, rx_flax.to_linen(module, params), cell, params, is_lstm)


@pytest.mark.parametrize("module_cls", LINEN, ids=lambda c: c.__name__)
def test_linen_round_trips_are_exact(module_cls):
    module, variables = _linen_variables(module_cls)
    _, params = rx_flax.from_linen(module, variables)
    chex.assert_trees_all_equal(rx_flax.to_linen(module, params), variables)
    _, again = rx_flax.from_linen(module, rx_flax.to_linen(module, params))
    chex.assert_trees_all_equal(again, params)
    _, from_params_only = rx_flax.from_linen(module, variables["params"])
    chex.assert_trees_all_equal(from_params_only, params)


@pytest.mark.parametrize("module_cls", NNX, ids=lambda c: c.__name__)
def test_from_nnx_matches_nnx(module_cls):
    is_lstm = module_cls in (nnx.LSTMCell, nnx.OptimizedLSTMCell)
    module = module_cls(I, H, rngs=nnx.Rngs(0))
    nnx.update(module, _randomise(nnx.state(module, nnx.Param), seed=4))
    cell, params = rx_flax.from_nnx(module)
    carry, state = _flax_carry(is_lstm)

    flax_ys = []
    for t in range(T):
        carry, y = module(carry, XS[:, t])
        flax_ys.append(y)
    rx_final, rx_ys = rx.scan(cell, params, XS, state)
    chex.assert_trees_all_close(rx_ys, jnp.stack(flax_ys, axis=1), **TOL)
    chex.assert_trees_all_close(_rx_final(rx_final, is_lstm), carry, **TOL)
    if module_cls is nnx.GRUCell:
        # flax#5594: nnx.GRUCell has no recurrent candidate bias; the conversion says so exactly.
        np.testing.assert_array_equal(params["b_hn"], np.zeros(H))


def test_nnx_lstm_agrees_with_linen_conversion():
    module = nnx.LSTMCell(I, H, rngs=nnx.Rngs(0))
    nnx.update(module, _randomise(nnx.state(module, nnx.Param), seed=5))
    _, params = rx_flax.from_nnx(module)
    np.testing.assert_array_equal(params["w_i"][:, H : 2 * H], module.if_.kernel[...])
    np.testing.assert_array_equal(params["b"][3 * H :], module.ho.bias[...])


def test_from_linen_errors_name_the_offending_key():
    module, variables = _linen_variables(nn.LSTMCell)
    params = dict(variables["params"])
    bad = {**params, "hf": {**params["hf"], "kernel": jnp.zeros((H + 1, H))}}
    with pytest.raises(ValueError, match=r"`hf/kernel` must have shape \(4, 4\), got \(5, 4\)"):
        rx_flax.from_linen(module, bad)
    without_bias = {**params, "ho": {"kernel": params["ho"]["kernel"]}}
    with pytest.raises(ValueError, match="missing `ho/bias`"):
        rx_flax.from_linen(module, without_bias)
    with pytest.raises(ValueError, match="missing `ig`"):
        rx_flax.from_linen(module, {k: v for k, v in params.items() if k != "ig"})
    with pytest.raises(ValueError, match="unexpected `extra`"):
        rx_flax.from_linen(module, {**params, "extra": {}})
    wrong_input = {**params, "if": {"kernel": jnp.zeros((I + 2, H))}}
    with pytest.raises(ValueError, match=r"`if/kernel` has shape \(7, 4\), but `ii/kernel` has \(5, 4\)"):
        rx_flax.from_linen(module, wrong_input)
    with pytest.raises(TypeError, match="Dense"):
        rx_flax.from_linen(nn.Dense(H), variables)
    with pytest.raises(ValueError, match="SimpleCell: missing `h`"):
        rx_flax.from_linen(nn.SimpleCell(H), variables)


def test_to_linen_refuses_what_flax_cannot_compute():
    peephole = rx.lstm(H, peephole=True).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="`w_peep`"):
        rx_flax.to_linen(nn.LSTMCell(H), peephole)
    projected = rx.lstm(H, proj_size=2).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="`w_proj`"):
        rx_flax.to_linen(nn.LSTMCell(H), projected)
    reset_before = rx.gru(H, reset_after=False).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"`b_hn` is missing.*reset_after=False"):
        rx_flax.to_linen(nn.GRUCell(H), reset_before)
    with pytest.raises(ValueError, match=r"`w_h` must have shape \(3, 12\), got \(4, 16\)"):
        rx_flax.to_linen(nn.LSTMCell(H - 1), rx.lstm(H).init(jax.random.key(0), I))
    with pytest.raises(ValueError, match="`w_i`"):
        rx_flax.to_linen(nn.LSTMCell(H), {"w_h": jnp.zeros((H, 4 * H))})


SINGLE_VECTOR = {
    "MGUCell": lambda: nn.MGUCell(H),
    "SimpleCell": lambda: nn.SimpleCell(H),
    "SimpleCell_relu_residual": lambda: nn.SimpleCell(H, activation_fn=jax.nn.relu, residual=True),
}


@pytest.mark.parametrize("make", list(SINGLE_VECTOR))
def test_mgu_and_simple_cells_convert_both_ways_exactly(make):
    module = SINGLE_VECTOR[make]()
    carry, _ = _flax_carry(False)
    variables = _randomise(module.init(jax.random.key(0), carry, XS[:, 0]))
    cell, params = rx_flax.from_linen(module, variables)
    _assert_same_as_linen(module, variables, cell, params, is_lstm=False)
    chex.assert_trees_all_equal(rx_flax.to_linen(module, params), variables)
    # recurrax's own cells of these forms compute Flax's functions.
    want = (
        rx.mgu(H, variant="flax")
        if make == "MGUCell"
        else rx.elman(H, **({} if make == "SimpleCell" else {"activation": jax.nn.relu, "residual": True}))
    )
    assert cell == want


def test_flax_mgu_forms_that_recurrax_lacks_are_refused_by_name():
    module = nn.MGUCell(H, reset_gate=False)
    variables = module.init(jax.random.key(0), jnp.zeros((B, H)), XS[:, 0])
    with pytest.raises(ValueError, match="reset_gate=False"):
        rx_flax.from_linen(module, variables)
    plain = rx.mgu(H)  # the default variant has no `b_hn`: another function on the same weights
    with pytest.raises(ValueError, match="variant='flax'"):
        rx_flax.to_linen(nn.MGUCell(H), plain.init(jax.random.key(0), I))


def _nnx_sequence(module, carry):
    """``module`` run step by step over ``XS`` from ``carry``: (final carry, outputs (B, T, H))."""
    ys = []
    for t in range(T):
        carry, y = module(carry, XS[:, t])
        ys.append(y)
    return carry, jnp.stack(ys, axis=1)


TO_NNX = {
    "lstm": (lambda: rx.lstm(H), {}),
    "lstm_optimized": (lambda: rx.lstm(H), {"optimized": True}),
    "lstm_no_bias": (lambda: rx.lstm(H, use_bias=False), {}),
    "gru": (lambda: rx.gru(H), {}),
    "elman_relu_residual": (lambda: rx.elman(H, activation=jax.nn.relu, residual=True), {}),
}


@pytest.mark.parametrize("name", list(TO_NNX))
def test_to_nnx_builds_a_module_computing_the_cell(name):
    make, kwargs = TO_NNX[name]
    cell = make()
    params = _randomise(cell.init(jax.random.key(0), I), seed=6)
    if "b_hn" in params:
        params["b_hn"] = jnp.zeros_like(params["b_hn"])  # flax#5594: what nnx.GRUCell can compute
    module = rx_flax.to_nnx(cell, params, **kwargs)
    want_cls = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell, "elman": nnx.SimpleCell}[cell.name]
    assert type(module) is (nnx.OptimizedLSTMCell if kwargs else want_cls)
    is_lstm = cell.name == "lstm"
    carry, state = _flax_carry(is_lstm)
    nnx_final, nnx_ys = _nnx_sequence(module, carry)
    rx_final, rx_ys = rx.scan(cell, params, XS, state)
    chex.assert_trees_all_close(rx_ys, nnx_ys, atol=1e-6, rtol=1e-6)
    chex.assert_trees_all_close(_rx_final(rx_final, is_lstm), nnx_final, atol=1e-6, rtol=1e-6)
    _, back = rx_flax.from_nnx(module)
    if "b" not in params:
        chex.assert_trees_all_equal(back.pop("b"), jnp.zeros((4 * H,)))
    chex.assert_trees_all_equal(back, params)


def test_to_nnx_refuses_what_nnx_cannot_compute():
    key = jax.random.key(0)
    gru = rx.gru(H)
    with pytest.raises(ValueError, match=r"`b_hn` is not zero.*flax#5594"):
        rx_flax.to_nnx(gru, _randomise(gru.init(key, I)))
    for cell, option in [
        (rx.lstm(H, peephole=True), "peephole=True"),
        (rx.lstm(H, proj_size=2), "proj_size=2"),
        (rx.lstm(H, cell_clip=3.0), "cell_clip=3.0"),
        (rx.gru(H, reset_after=False), "reset_after=False"),
    ]:
        with pytest.raises(ValueError, match=f"to_nnx: flax.nnx has no {cell.name} cell with `{option}`"):
            rx_flax.to_nnx(cell, cell.init(key, I))
    with pytest.raises(ValueError, match="Flax NNX has no equivalent of recurrax's `mgu`"):
        rx_flax.to_nnx(rx.mgu(H), rx.mgu(H).init(key, I))
    replaced = rx.lstm(H)._replace(transition=lambda p, s, z: s)
    with pytest.raises(ValueError, match="cannot tell what this `lstm` cell computes"):
        rx_flax.to_nnx(replaced, rx.lstm(H).init(key, I))
    with pytest.raises(ValueError, match=r"`w_i` must have shape \(I, 16\), got \(5, 20\)"):
        rx_flax.to_nnx(rx.lstm(H), rx.lstm(H + 1).init(key, I))
    with pytest.raises(TypeError, match=r"`cell` must be a recurrax\.Cell"):
        rx_flax.to_nnx(nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)), {})


ACTIVATED = {
    "LSTMCell": lambda: nn.LSTMCell(H, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.relu),
    "OptimizedLSTMCell": lambda: nn.OptimizedLSTMCell(H, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign),
    "GRUCell": lambda: nn.GRUCell(H, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.relu),
    "MGUCell": lambda: nn.MGUCell(H, gate_fn=jnp.tanh, activation_fn=jax.nn.relu),
}


@pytest.mark.parametrize("make", list(ACTIVATED))
def test_flax_gate_and_activation_functions_convert_both_ways(make):
    """Flax's gate_fn / activation_fn are the cells' gate_activation / activation; only the defaults are fast."""
    module = ACTIVATED[make]()
    is_lstm = "LSTM" in make
    carry, _ = _flax_carry(is_lstm)
    variables = _randomise(module.init(jax.random.key(0), carry, XS[:, 0]), seed=8)
    cell, params = rx_flax.from_linen(module, variables)
    _assert_same_as_linen(module, variables, cell, params, is_lstm)
    chex.assert_trees_all_equal(rx_flax.to_linen(module, params), variables)
    assert rx.backends.which(cell, params, XS) == "sequential"
    if make in ("LSTMCell", "GRUCell"):
        params = {**params, "b_hn": jnp.zeros((H,))} if "b_hn" in params else params
        nnx_module = rx_flax.to_nnx(cell, params)
        assert nnx_module.gate_fn is module.gate_fn and nnx_module.activation_fn is module.activation_fn
        carry, state = _flax_carry(is_lstm)
        nnx_final, nnx_ys = _nnx_sequence(nnx_module, carry)
        rx_final, rx_ys = rx.scan(cell, params, XS, state)
        chex.assert_trees_all_close(rx_ys, nnx_ys, atol=1e-6, rtol=1e-6)
        chex.assert_trees_all_close(_rx_final(rx_final, is_lstm), nnx_final, atol=1e-6, rtol=1e-6)
        again, back = rx_flax.from_nnx(nnx_module)
        assert again == cell
        chex.assert_trees_all_equal(back, params)
