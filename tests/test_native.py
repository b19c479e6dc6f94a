"""The native CPU LSTM kernel (recurrax.native): values, every derivative and transform, the build.

References: the LSTM equations in NumPy (float64), JAX autodiff of the plain per-step scan
(``cell._replace(fused=None)``) and the XLA sequence path (``native=False``), numerical differences
(``check_grads``). Shapes are chosen to hit the kernel's edges: a batch that is not a multiple of the
forward tile's 6 rows (or the backward tile's), hidden sizes of 1, 3 and 5 vectors, one step.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax import fused
from recurrax.native import build
from recurrax.native import lstm as native_lstm
from reference import lstm as numpy_lstm
from reference import random_inputs, random_params, random_state, run, to_numpy

pytestmark = pytest.mark.skipif(build.load() is None, reason="no C++ compiler: the native kernel is not built")

TOL = dict(atol=2e-5, rtol=2e-5)


def _cells(hidden):
    cell = rx.lstm(hidden)
    return cell, cell._replace(fused=fused.sequence_transition("lstm", native=False)), cell._replace(fused=None)


def _problem(hidden, batch=(7,), steps=9, inputs=5, seed=0):
    cell = rx.lstm(hidden)
    params = random_params(cell, seed, inputs)
    # N(0, 0.5^2) weights saturate gates at H=80; scale them down so every gate derivative matters.
    params = jax.tree.map(lambda w: w / np.sqrt(hidden / 8), params)
    xs = random_inputs((*batch, steps, inputs), seed + 1)
    state = random_state(cell, params, batch, seed + 2, scale=0.5)
    return params, xs, state


def _uses_kernel(cell, params, xs, state) -> bool:
    return "recurrax_lstm_forward" in str(jax.make_jaxpr(lambda p: rx.scan(cell, p, xs, state))(params))


@pytest.mark.parametrize("hidden", [16, 48, 80])
@pytest.mark.parametrize("batch", [(1,), (7,), (2, 5)])
def test_forward_matches_numpy(hidden, batch):
    cell, _, _ = _cells(hidden)
    params, xs, state = _problem(hidden, batch)
    assert _uses_kernel(cell, params, xs, state)
    final, ys = jax.jit(lambda p, x, s: rx.scan(cell, p, x, s))(params, xs, state)
    ref_final, ref_ys, _ = run(numpy_lstm, to_numpy(params), xs, to_numpy(state))
    np.testing.assert_allclose(ys, ref_ys, **TOL)
    np.testing.assert_allclose(final.c, ref_final[1], **TOL)


def test_jit_equals_eager_and_options():
    cell, xla, _ = _cells(32)
    params, xs, state = _problem(32, (3,), steps=1)
    eager = native_lstm.forward(jnp.swapaxes(xs, 0, 1), params["w_i"], params["b"], params["w_h"], state.h, state.c)
    jitted = jax.jit(native_lstm.forward)(
        jnp.swapaxes(xs, 0, 1), params["w_i"], params["b"], params["w_h"], state.h, state.c
    )
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)
    params, xs, state = _problem(32, (3,), steps=6)
    for kwargs in (dict(reverse=True), dict(return_states=True, include_initial=True)):
        got = rx.scan(cell, params, xs, state, **kwargs)
        want = rx.scan(xla, params, xs, state, **kwargs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


def _loss(cell, params, xs, state):
    final, ys, states = rx.scan(cell, params, xs, state, return_states=True)
    # Cotangents on h at every step and on the whole c sequence, weighted so no two paths cancel.
    return jnp.sum(jnp.sin(ys) * jnp.arange(1, ys.shape[-1] + 1)) + jnp.sum(states.c**2) + jnp.sum(final.c)


@pytest.mark.parametrize("hidden,batch", [(16, (1,)), (48, (7,)), (80, (2, 5))])
def test_gradients_match_autodiff_of_the_step(hidden, batch):
    cell, _, plain = _cells(hidden)
    params, xs, state = _problem(hidden, batch)
    grad = jax.jit(jax.grad(_loss, argnums=(1, 2, 3)), static_argnums=0)
    got, want = grad(cell, params, xs, state), grad(plain, params, xs, state)
    assert "recurrax_lstm_backward" in str(
        jax.make_jaxpr(lambda *a: jax.grad(_loss, argnums=1)(cell, *a))(params, xs, state)
    )
    jax.tree.map(_close_to_scale, got, want)


@pytest.mark.parametrize("reads", ["outputs", "final_c"])
def test_gradients_when_a_sequence_gets_no_cotangent(reads):
    """A loss on the outputs alone (no cotangent for c) or on the final c alone (none for h)."""
    cell, _, plain = _cells(32)
    params, xs, state = _problem(32, (7,), steps=6)

    def loss(c, p, x, s):
        final, ys = rx.scan(c, p, x, s)
        return jnp.sum(jnp.sin(ys)) if reads == "outputs" else jnp.sum(final.c * jnp.arange(32))

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    jax.tree.map(_close_to_scale, grad(cell, params, xs, state), grad(plain, params, xs, state))


def _close_to_scale(a, b, tol=1e-5):
    """Equal to ``tol`` relative to the leaf's largest entry: sums over T*N float32 terms differ in order."""
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


def test_check_grads_float32():
    cell, _, _ = _cells(16)
    params, xs, state = _problem(16, (3,), steps=4, inputs=3)
    f = lambda p, x, s: _loss(cell, p, x, s)  # noqa: E731
    check_grads(f, (params, xs, state), order=1, modes=["fwd", "rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


def test_forward_mode_and_second_order():
    cell, xla, _ = _cells(32)
    params, xs, state = _problem(32, (3,), steps=5)
    tangent = jax.tree.map(lambda a: jnp.cos(a), params)
    got = jax.jvp(lambda p: _loss(cell, p, xs, state), (params,), (tangent,))
    want = jax.jvp(lambda p: _loss(xla, p, xs, state), (params,), (tangent,))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jac = lambda c: jax.jacfwd(lambda h: rx.scan(c, params, xs, state._replace(h=h))[1])(state.h)  # noqa: E731
    np.testing.assert_allclose(jac(cell), jac(xla), atol=1e-5)
    hvp = lambda c: jax.jvp(jax.grad(lambda p: _loss(c, p, xs, state)), (params,), (tangent,))[1]  # noqa: E731
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), hvp(cell), hvp(xla))


def test_vmap_over_examples_and_over_weights_equals_a_loop():
    cell, _, _ = _cells(32)
    params, xs, state = _problem(32, (4,), steps=5)
    per_example = jax.vmap(jax.grad(_loss, argnums=1), in_axes=(None, None, 0, 0))
    got = per_example(cell, params, xs[:, None], jax.tree.map(lambda a: a[:, None], state))
    for n in range(4):
        one = jax.grad(_loss, argnums=1)(cell, params, xs[n : n + 1], _row(state, n))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), _pick(got, n), one)
    halved = jax.tree.map(lambda a: 0.5 * a, params)
    ensemble = jax.tree.map(lambda *a: jnp.stack(a), params, halved)
    got = jax.vmap(jax.grad(_loss, argnums=1), in_axes=(None, 0, None, None))(cell, ensemble, xs, state)
    for n, member in enumerate((params, halved)):
        want = jax.grad(_loss, argnums=1)(cell, member, xs, state)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), _pick(got, n), want)


def _row(tree, n):
    """Batch row ``n`` of every leaf, keeping the axis."""
    return jax.tree.map(lambda a: a[n : n + 1], tree)


def _pick(tree, n):
    return jax.tree.map(lambda a: a[n], tree)


@pytest.mark.parametrize("hidden,dtype", [(20, jnp.float32), (32, jnp.bfloat16)])
def test_does_not_apply_where_the_kernel_cannot_run(hidden, dtype):
    cell, _, _ = _cells(hidden)
    params, xs, state = _problem(hidden, (2,), steps=3)
    params, xs, state = jax.tree.map(lambda a: a.astype(dtype), (params, xs, state))
    assert not _uses_kernel(cell, params, xs, state)


def test_float64_uses_the_xla_loop():
    with jax.enable_x64(True):
        cell, _, _ = _cells(32)
        params, xs, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _problem(32, (2,), steps=3))
        assert not _uses_kernel(cell, params, xs, state)


def test_build_is_cached_and_keyed(tmp_path):
    first = build.build(tmp_path)
    assert first.exists() and build.build(tmp_path) == first
    assert first.name.startswith("recurrax_native_") and list(tmp_path.iterdir()) == [first]


def test_a_missing_compiler_is_an_error_and_load_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        build.build(tmp_path)
    monkeypatch.setenv("RECURRAX_CACHE_DIR", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.load.__wrapped__() is None
    assert any("native CPU LSTM kernel is unavailable" in str(w.message) for w in caught)


def test_a_compile_error_reports_the_compiler_output(tmp_path, monkeypatch):
    script = tmp_path / "cxx"
    script.write_text(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake; exit 0; fi\necho 'error: broken' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    with pytest.raises(RuntimeError, match="error: broken"):
        build.build(tmp_path)
