"""Analyses of stacked networks (``recurrax.as_cell``): per layer and per field, against PyTorch's autograd.

The reference for gradient flow is a 2-layer ``torch.nn.LSTMCell`` stack holding the weights of the
``torch.nn.LSTM(num_layers=2)`` that ``from_torch`` converts: a zero perturbation ``e_t`` is added to each layer's
``h`` and ``c`` after every full step (the state of the stack as a dynamical system, ``s_t``), and
``e_t.grad`` is ``dL / d s_t``, computed by torch without recurrax's code.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import dynamics as dyn
from recurrax.interop import from_torch

torch = pytest.importorskip("torch")

T, I, H = 6, 3, 4


def _torch_lstm(seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H, num_layers=2, batch_first=True).double()


def _torch_gradient_flow(module, xs):
    """``dL/ds_t`` per layer and field for ``L = sum(h_T of layer 2 ** 2) + sum(c_T of layer 1)``."""
    cells = [torch.nn.LSTMCell(I if layer == 0 else H, H).double() for layer in range(2)]
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(module, f"{name}_l{layer}"))
    eps = [[torch.zeros(H, dtype=torch.float64, requires_grad=True) for _ in range(4)] for _ in range(T + 1)]
    h1, c1, h2, c2 = eps[0]
    x = torch.tensor(np.asarray(xs), dtype=torch.float64)
    for t in range(T):
        h1n, c1n = cells[0](x[t : t + 1], (h1[None], c1[None]))
        h2n, c2n = cells[1](h1n, (h2[None], c2[None]))
        e = eps[t + 1]
        h1, c1, h2, c2 = h1n[0] + e[0], c1n[0] + e[1], h2n[0] + e[2], c2n[0] + e[3]
    loss = (h2**2).sum() + c1.sum()
    loss.backward()
    # A perturbation the loss does not depend on (layer 1's h after the last step) gets no .grad: it is zero.
    grads = np.array([[np.zeros(H) if e.grad is None else e.grad.numpy() for e in step] for step in eps])
    return {"h1": grads[:, 0], "c1": grads[:, 1], "h2": grads[:, 2], "c2": grads[:, 3]}


def test_gradient_flow_per_layer_and_field_equals_torch_autograd():
    with jax.enable_x64(True):
        module = _torch_lstm()
        layer, params = from_torch(module)
        xs = jax.random.normal(jax.random.key(0), (T, I), jnp.float64)
        flow = jax.jit(lambda p, x: dyn.gradient_flow(layer, p, x, lambda s: jnp.sum(s[1].h ** 2) + jnp.sum(s[0].c)))(
            params, xs
        )
        want = _torch_gradient_flow(module, xs)
        got = {"h1": flow.grads[0].h, "c1": flow.grads[0].c, "h2": flow.grads[1].h, "c2": flow.grads[1].c}
        chex.assert_trees_all_close(got, want, atol=1e-10, rtol=1e-10)
        np.testing.assert_allclose(flow.norms[1].c, np.linalg.norm(want["c2"], axis=-1), rtol=1e-10)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_a_stack_as_one_cell_computes_the_layer(residual):
    layer = rx.stacked([rx.lstm(H), rx.gru(H), rx.lstm(H)], residual=residual)
    cell = rx.as_cell(layer)
    params = layer.init(jax.random.key(1), I)
    xs = jax.random.normal(jax.random.key(2), (2, T, I))
    want = layer.apply(params, xs)
    chex.assert_trees_all_close(rx.scan(cell, params, xs), want, atol=1e-6, rtol=1e-6)
    state = cell.initial_state(params, (2,))  # streaming, one step at a time
    outputs = []
    for t in range(T):
        state = cell.step(params, state, xs[:, t])
        outputs.append(cell.output(state))
    chex.assert_trees_all_close((state, jnp.stack(outputs, 1)), want, atol=1e-6, rtol=1e-6)
    assert cell == rx.as_cell(rx.stacked([rx.lstm(H), rx.gru(H), rx.lstm(H)], residual=residual))


def test_step_jacobian_of_a_stack_has_per_layer_blocks_and_vmaps():
    layer = rx.stacked([rx.lstm(H), rx.gru(H)])
    params = layer.init(jax.random.key(3), I)
    cell = rx.as_cell(layer)
    states = jax.tree.map(lambda s: jax.random.normal(jax.random.key(4), (5, *s.shape)), cell.initial_state(params, ()))
    x = jnp.ones((I,))
    jac = jax.vmap(lambda s: dyn.step_jacobian(layer, params, s, x))(states)
    loop = [dyn.step_jacobian(layer, params, jax.tree.map(lambda a, i=i: a[i], states), x) for i in range(5)]
    chex.assert_trees_all_close(jac, jax.tree.map(lambda *a: jnp.stack(a), *loop), atol=1e-6)
    # Layer 1 does not see layer 2: that block of the Jacobian is exactly zero.
    np.testing.assert_array_equal(jac.matrix[:, : 2 * H, 2 * H :], 0.0)
    auto = jax.jacfwd(lambda s: dyn.flatten(cell.step(params, dyn.unflatten(cell.initial_state(params, ()), s), x)))
    flat0 = dyn.flatten(jax.tree.map(lambda a: a[0], states))
    np.testing.assert_allclose(jac.matrix[0], auto(flat0), atol=1e-6)


def test_layers_without_a_one_step_form_are_refused_by_name():
    bi = rx.bidirectional(rx.gru(H), rx.gru(H))
    with pytest.raises(ValueError, match=r"dynamics.trajectory: bidirectional\(gru, gru\) has no one-step form"):
        dyn.trajectory(bi, bi.init(jax.random.key(0), I), jnp.zeros((T, I)))
    with pytest.raises(ValueError, match="has no one-step form"):
        rx.as_cell(rx.stacked([bi, rx.gru(H)]))
    with pytest.raises(TypeError, match=r"as_cell: expected a recurrax\.Cell or Layer"):
        rx.as_cell("lstm")
