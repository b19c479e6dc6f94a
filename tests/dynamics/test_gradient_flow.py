"""Gradient flow through time against explicit products of NumPy step Jacobians (finite differences)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dynamics_reference import numeric_jacobian

import recurrax as rx
from recurrax import dynamics as dyn
from reference import elman as np_elman
from reference import lstm as np_lstm
from reference import random_inputs, random_params, to_numpy

T, H, I = 8, 3, 2


def numpy_products(step, params, xs, state0):
    """``P_t = d s_T / d s_t`` for ``t = 0..T`` from finite-difference Jacobians along the NumPy run."""
    p, xs = to_numpy(params), np.asarray(xs, np.float64)
    sizes = [s.size for s in state0]
    cut = np.cumsum(sizes)[:-1]
    s = np.concatenate([np.asarray(v, np.float64) for v in state0])
    jacs = []
    for x in xs:
        f = lambda v, x=x: np.concatenate(step(p, tuple(np.split(v, cut)), x))  # noqa: E731
        jacs.append(numeric_jacobian(f, s))
        s = f(s)
    products = [np.eye(s.size)]
    for jac in reversed(jacs):
        products.insert(0, products[0] @ jac)
    return np.stack(products), sizes


@pytest.fixture(scope="module")
def lstm_run():
    cell = rx.lstm(H)
    params = random_params(cell, 0, I)
    xs = random_inputs((T, I), 1)
    state = rx.LSTMState(h=random_inputs((H,), 2), c=random_inputs((H,), 3))
    products, _ = numpy_products(np_lstm, params, xs, to_numpy(state))
    return cell, params, xs, state, products


def test_gradient_flow_equals_transposed_jacobian_products(lstm_run):
    cell, params, xs, state, products = lstm_run
    u = np.asarray(random_inputs((2 * H,), 4), np.float64)
    flow = dyn.gradient_flow(cell, params, xs, lambda s: jnp.dot(jnp.concatenate([s.h, s.c]), u), state)
    want = np.einsum("tij,i->tj", products, u)  # dL/ds_t = P_t^T u for L = u . s_T
    np.testing.assert_allclose(flow.grads.h, want[:, :H], atol=1e-5)
    np.testing.assert_allclose(flow.grads.c, want[:, H:], atol=1e-5)
    np.testing.assert_allclose(flow.norms.c, np.linalg.norm(want[:, H:], axis=-1), atol=1e-5)
    np.testing.assert_allclose(flow.total, np.linalg.norm(want, axis=-1), atol=1e-5)


@pytest.mark.parametrize("method", ["explicit", "power"])
def test_product_norms_equal_spectral_norms_of_the_products(lstm_run, method):
    cell, params, xs, state, products = lstm_run
    norms = dyn.jacobian_product_norms(cell, params, xs, state, method=method, num_iters=200)
    spectral = lambda m: np.linalg.norm(m, ord=2, axis=(-2, -1))  # noqa: E731
    np.testing.assert_allclose(norms.total, spectral(products), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norms.blocks.c.c, spectral(products[:, H:, H:]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norms.blocks.h.c, spectral(products[:, :H, H:]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norms.blocks.c.h, spectral(products[:, H:, :H]), rtol=1e-4, atol=1e-6)


def test_elman_gradient_vanishes_as_the_product_of_its_jacobians():
    cell = rx.elman(4)
    params = random_params(cell, 5, I)
    xs = random_inputs((T, I), 6)
    products, _ = numpy_products(np_elman, params, xs, (np.zeros(4),))
    flow = dyn.gradient_flow(cell, params, xs, lambda s: s.h[0])
    np.testing.assert_allclose(flow.grads.h, products[:, 0, :], atol=1e-5)


def test_vmap_equals_loop_and_jit_equals_eager(lstm_run):
    cell, params, _, state, _ = lstm_run
    xs = random_inputs((3, T, I), 7)

    def flow(xs):
        return dyn.gradient_flow(cell, params, xs, lambda s: jnp.sum(s.h**2), state)

    batched = jax.vmap(flow)(xs)
    for b in range(3):
        chex.assert_trees_all_close(jax.tree.map(lambda a, b=b: a[b], batched), flow(xs[b]), atol=1e-6)
    chex.assert_trees_all_close(jax.jit(flow)(xs[0]), flow(xs[0]), atol=1e-6)
    norms = lambda xs: dyn.jacobian_product_norms(cell, params, xs, state)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(norms)(xs[0]), norms(xs[0]), atol=1e-5)


def test_bad_input(lstm_run):
    cell, params, xs, state, _ = lstm_run
    with pytest.raises(ValueError, match="scalar"):
        dyn.gradient_flow(cell, params, xs, lambda s: s.h, state)
    with pytest.raises(ValueError, match="method"):
        dyn.jacobian_product_norms(cell, params, xs, method="svd")


def test_power_iteration_reports_its_convergence(lstm_run):
    # The relative residual |A v - rho v| / rho of A = P^T P says how far the power iteration is from converged.
    cell, params, xs, state, products = lstm_run
    exact = np.linalg.norm(products, ord=2, axis=(-2, -1))  # NumPy's SVD of the finite-difference products
    explicit = dyn.jacobian_product_norms(cell, params, xs, state, method="explicit")
    assert np.all(np.asarray(explicit.residual) == 0) and np.all(np.asarray(explicit.block_residuals.c.c) == 0)
    for num_iters, converged in [(2, False), (50, True), (200, True)]:
        norms = dyn.jacobian_product_norms(cell, params, xs, state, method="power", num_iters=num_iters)
        error = np.abs(np.asarray(norms.total) / exact - 1)
        residual = np.asarray(norms.residual)
        assert np.all(error <= residual + 1e-5)  # the norm's error is within (in fact well below) the residual
        if converged:
            assert residual.max() < 1e-4 and error.max() < 1e-5
        else:
            assert residual.max() > 0.1 and error.max() > 1e-2
        assert norms.block_residuals.h.c.shape == (T + 1,)
