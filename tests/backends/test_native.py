"""The native CPU LSTM and GRU kernels (recurrax.backends.cpu): values, every derivative and transform, the build.

References: the cell equations in NumPy (float64), JAX autodiff of the plain per-step scan
(``backend="sequential"``) and the XLA sequence path (``xla_lstm``/``xla_gru``), numerical differences
(``check_grads``). Shapes are chosen to hit the kernels' edges: a batch that is not a multiple of a
tile's 6 rows, hidden sizes of 1, 3 and 5 vectors (the backward tiles take up to 4), hidden sizes padded
to whole vectors (20, 37), one step.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recurrax as rx
from recurrax.backends import tuning
from recurrax.backends.cpu import build
from recurrax.backends.cpu import gru as native_gru
from recurrax.backends.cpu import lstm as native_lstm
from reference import gru as numpy_gru
from reference import lstm as numpy_lstm
from reference import random_inputs, random_params, random_state, run, to_numpy

pytestmark = [
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="the native kernels run on CPU only"),
    pytest.mark.skipif(build.load() is None, reason="no C++ compiler: the native kernels are not built"),
]

TOL = dict(atol=2e-5, rtol=2e-5)
KINDS = ["lstm", "gru"]


class _On:
    """A cell with the backend its scans run on (``auto`` for a bare cell); reads as the cell otherwise."""

    def __init__(self, cell, backend="auto"):
        self.cell, self.backend = cell, backend

    def __getattr__(self, name):
        return getattr(self.cell, name)


def _scan(on, *args, **kwargs):
    on = on if isinstance(on, _On) else _On(on)
    return rx.scan(on.cell, *args, backend=on.backend, **kwargs)


def _cells(kind, hidden):
    """The cell on the kernels at any size, on the XLA sequence path instead, and the plain per-step scan."""
    base = {"lstm": rx.lstm, "gru": rx.gru}[kind](hidden)
    return _On(base, f"native_{kind}"), _On(base, f"xla_{kind}"), _On(base, "sequential")


@pytest.mark.parametrize("kind", KINDS)
def test_the_default_cells_use_the_kernels_from_native_from(kind):
    cell = {"lstm": rx.lstm, "gru": rx.gru}[kind](32)
    params, xs, state = _problem(kind, 32, (4,), steps=tuning.NATIVE_FROM // 4)
    assert _uses_kernel(kind, cell, params, xs, state)
    assert not _uses_kernel(kind, cell, params, xs[:, :-1], state)  # one step short


def _problem(kind, hidden, batch=(7,), steps=9, inputs=5, seed=0):
    cell = _cells(kind, hidden)[0].cell
    params = random_params(cell, seed, inputs)
    # N(0, 0.5^2) weights saturate gates at H=80; scale them down so every gate derivative matters.
    params = jax.tree.map(lambda w: w / np.sqrt(hidden / 8), params)
    xs = random_inputs((*batch, steps, inputs), seed + 1)
    state = random_state(cell, params, batch, seed + 2, scale=0.5)
    return params, xs, state


def _uses_kernel(kind, cell, params, xs, state) -> bool:
    return f"recurrax_{kind}_forward" in str(jax.make_jaxpr(lambda p: _scan(cell, p, xs, state))(params))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden", [16, 48, 80, 20])  # 20: padded to 32 units inside the call
@pytest.mark.parametrize("batch", [(1,), (7,), (2, 5)])
def test_forward_matches_numpy(kind, hidden, batch):
    cell, _, _ = _cells(kind, hidden)
    params, xs, state = _problem(kind, hidden, batch)
    assert _uses_kernel(kind, cell, params, xs, state)
    final, ys = jax.jit(lambda p, x, s: _scan(cell, p, x, s))(params, xs, state)
    step = {"lstm": numpy_lstm, "gru": numpy_gru}[kind]
    ref_final, ref_ys, _ = run(step, to_numpy(params), xs, to_numpy(state))
    np.testing.assert_allclose(ys, ref_ys, **TOL)
    for got, want in zip(final, ref_final):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_jit_equals_eager_and_scan_options(kind):
    cell, xla, _ = _cells(kind, 32)
    params, xs, state = _problem(kind, 32, (3,), steps=1)
    eager = _scan(cell, params, xs, state)
    jitted = jax.jit(lambda p, x, s: _scan(cell, p, x, s))(params, xs, state)
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)
    params, xs, state = _problem(kind, 32, (3,), steps=6)
    for kwargs in (dict(reverse=True), dict(return_states=True, include_initial=True), dict(time_major=True)):
        inputs = jnp.swapaxes(xs, 0, 1) if kwargs.get("time_major") else xs
        got = _scan(cell, params, inputs, state, **kwargs)
        want = _scan(xla, params, inputs, state, **kwargs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


def _loss(cell, params, xs, state):
    final, ys, states = _scan(cell, params, xs, state, return_states=True)
    # Cotangents on the outputs at every step and on every state leaf, weighted so no two paths cancel.
    loss = jnp.sum(jnp.sin(ys) * jnp.arange(1, ys.shape[-1] + 1))
    return loss + sum(jnp.sum(s**2) for s in states[1:]) + jnp.sum(final[-1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hidden,batch", [(16, (1,)), (48, (7,)), (80, (2, 5)), (37, (3,))])
def test_gradients_match_autodiff_of_the_step(kind, hidden, batch):
    cell, _, plain = _cells(kind, hidden)
    params, xs, state = _problem(kind, hidden, batch)
    grad = jax.jit(jax.grad(_loss, argnums=(1, 2, 3)), static_argnums=0)
    got, want = grad(cell, params, xs, state), grad(plain, params, xs, state)
    jaxpr = str(jax.make_jaxpr(lambda *a: jax.grad(_loss, argnums=1)(cell, *a))(params, xs, state))
    assert f"recurrax_{kind}_backward" in jaxpr
    jax.tree.map(_close_to_scale, got, want)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reads", ["outputs", "final"])
def test_gradients_when_a_sequence_gets_no_cotangent(kind, reads):
    """A loss on the outputs alone (no cotangent for an LSTM's c) or on the final state's last leaf alone."""
    cell, _, plain = _cells(kind, 32)
    params, xs, state = _problem(kind, 32, (7,), steps=6)

    def loss(c, p, x, s):
        final, ys = _scan(c, p, x, s)
        return jnp.sum(jnp.sin(ys)) if reads == "outputs" else jnp.sum(final[-1] * jnp.arange(32))

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    jax.tree.map(_close_to_scale, grad(cell, params, xs, state), grad(plain, params, xs, state))


def _close_to_scale(a, b, tol=1e-5):
    """Equal to ``tol`` relative to the leaf's largest entry: sums over T*N float32 terms differ in order."""
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float32(kind):
    cell, _, _ = _cells(kind, 16)
    params, xs, state = _problem(kind, 16, (3,), steps=4, inputs=3)
    f = lambda p, x, s: _loss(cell, p, x, s)  # noqa: E731
    check_grads(f, (params, xs, state), order=1, modes=["fwd", "rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_mode_and_second_order(kind):
    cell, xla, _ = _cells(kind, 32)
    params, xs, state = _problem(kind, 32, (3,), steps=5)
    tangent = jax.tree.map(lambda a: jnp.cos(a), params)
    got = jax.jvp(lambda p: _loss(cell, p, xs, state), (params,), (tangent,))
    want = jax.jvp(lambda p: _loss(xla, p, xs, state), (params,), (tangent,))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jac = lambda c: jax.jacfwd(lambda h: _scan(c, params, xs, state._replace(h=h))[1])(state.h)  # noqa: E731
    np.testing.assert_allclose(jac(cell), jac(xla), atol=1e-5)
    hvp = lambda c: jax.jvp(jax.grad(lambda p: _loss(c, p, xs, state)), (params,), (tangent,))[1]  # noqa: E731
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), hvp(cell), hvp(xla))


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_over_examples_and_over_weights_equals_a_loop(kind):
    cell, _, _ = _cells(kind, 32)
    params, xs, state = _problem(kind, 32, (4,), steps=5)
    per_example = jax.vmap(jax.grad(_loss, argnums=1), in_axes=(None, None, 0, 0))
    got = per_example(cell, params, xs[:, None], jax.tree.map(lambda a: a[:, None], state))
    # The forward pass alone under vmap (its unkept gates are an empty result to unfold).
    outputs = jax.vmap(lambda x, s: _scan(cell, params, x, s)[1])(
        xs[:, None], jax.tree.map(lambda a: a[:, None], state)
    )
    np.testing.assert_allclose(outputs[:, 0], _scan(cell, params, xs, state)[1], **TOL)
    for n in range(4):
        one = jax.grad(_loss, argnums=1)(cell, params, xs[n : n + 1], _row(state, n))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), _pick(got, n), one)
    halved = jax.tree.map(lambda a: 0.5 * a, params)
    ensemble = jax.tree.map(lambda *a: jnp.stack(a), params, halved)
    got = jax.vmap(jax.grad(_loss, argnums=1), in_axes=(None, 0, None, None))(cell, ensemble, xs, state)
    for n, member in enumerate((params, halved)):
        want = jax.grad(_loss, argnums=1)(cell, member, xs, state)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), _pick(got, n), want)


@pytest.mark.parametrize("kind", KINDS)
def test_results_do_not_depend_on_which_thread_ran_a_tile(kind):
    """Each output element is summed in a fixed order whatever core computed it: runs agree bit for bit."""
    cell, _, _ = _cells(kind, 64)
    params, xs, state = _problem(kind, 64, (32,), steps=12, inputs=64)  # big enough to use helper threads
    grad = jax.jit(jax.grad(_loss, argnums=(1, 2)), static_argnums=0)
    first = grad(cell, params, xs, state)
    for _ in range(3):
        jax.tree.map(np.testing.assert_array_equal, grad(cell, params, xs, state), first)


def _row(tree, n):
    """Batch row ``n`` of every leaf, keeping the axis."""
    return jax.tree.map(lambda a: a[n : n + 1], tree)


def _pick(tree, n):
    return jax.tree.map(lambda a: a[n], tree)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_uses_the_xla_loop(kind):
    cell = _On(_cells(kind, 32)[0].cell)
    params, xs, state = jax.tree.map(lambda a: a.astype(jnp.bfloat16), _problem(kind, 32, (2,), steps=3))
    assert not _uses_kernel(kind, cell, params, xs, state)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_units_stay_zero_and_change_nothing(kind):
    """H=20 runs as 32 units: the 12 padded ones never leave 0, so outputs and gradients are the plain scan's."""
    cell, xla, _ = _cells(kind, 20)
    params, xs, state = _problem(kind, 20, (3,), steps=7)
    assert _uses_kernel(kind, cell, params, xs, state)
    final, ys, states = _scan(cell, params, xs, state, return_states=True)
    assert ys.shape == (3, 7, 20) and all(s.shape == (3, 7, 20) for s in states)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), (final, ys), _scan(xla, params, xs, state))
    jacobian = lambda c: jax.jacfwd(lambda h: _scan(c, params, xs, state._replace(h=h))[0][0])(state.h)  # noqa: E731
    np.testing.assert_allclose(jacobian(cell), jacobian(xla), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_float64_uses_the_xla_loop(kind):
    with jax.enable_x64(True):
        cell = _On(_cells(kind, 32)[0].cell)
        params, xs, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _problem(kind, 32, (2,), steps=3))
        assert not _uses_kernel(kind, cell, params, xs, state)


def test_variants_the_kernel_does_not_cover_keep_their_path():
    params = random_params(rx.gru(32, reset_after=False), 0, 5)
    xs, state = random_inputs((2, 3, 5), 1), rx.RNNState(h=jnp.zeros((2, 32)))
    assert not _uses_kernel("gru", rx.gru(32, reset_after=False), params, xs, state)
    peephole = rx.lstm(32, peephole=True)
    params = random_params(peephole, 0, 5)
    assert not _uses_kernel("lstm", peephole, params, xs, peephole.initial_state(params, (2,)))


def test_the_primitives_called_directly():
    """``recurrax.backends.cpu.lstm`` without ``recurrax.scan``: time-major, batch-flattened, eager equals jit."""
    params, xs, state = _problem("lstm", 32, (3,), steps=4)
    args = (jnp.swapaxes(xs, 0, 1), params["w_i"], params["b"], params["w_h"], state.h, state.c)
    eager = native_lstm.forward(*args, keep_acts=True)
    jitted = jax.jit(lambda *a: native_lstm.forward(*a, keep_acts=True))(*args)
    assert [a.shape for a in eager] == [(4, 3, 32), (4, 3, 32), (4, 3, 128)]
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_run_each_row_to_its_length_and_zero_the_rest(kind):
    """The kernels' ``lengths``: each row equals the full run up to its length, every result after it is exactly 0,
    and the padded inputs are never read (NaN there reaches no result of the kernels). 13 rows: tiles of 6 (3 with
    AVX2) hold rows of several lengths, and rows of lengths 0 and T."""
    hidden, steps, rows = 32, 6, 13
    params, xs, state = _problem(kind, hidden, (rows,), steps=steps)
    lengths = jnp.array([6, 0, 3, 5, 6, 1, 2, 6, 4, 3, 0, 5, 2])
    valid = (jnp.arange(steps) < lengths[:, None])[..., None]  # (N, T, 1)
    mod = native_lstm if kind == "lstm" else native_gru
    weights = (params["w_i"], params["b"], params["w_h"]) + ((params["b_hn"],) if kind == "gru" else ())
    args = (xs, *weights, *state)
    full = mod.forward(*args, keep_acts=True)
    ragged = mod.forward(*args, lengths=lengths, keep_acts=True)
    ragged_nan = mod.forward(jnp.where(valid, xs, jnp.nan), *args[1:], lengths=lengths, keep_acts=True)
    for f, r, n in zip(full, ragged, ragged_nan):
        np.testing.assert_allclose(r, jnp.where(valid, f, 0.0), atol=1e-6, rtol=1e-6)
        assert np.all(np.asarray(r)[~np.broadcast_to(np.asarray(valid), r.shape)] == 0)
        np.testing.assert_array_equal(n, r)


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_with_lengths(kind):
    """Every derivative the kernels' ``lengths`` path defines, against numerical differences (zero-length row
    included)."""
    cell, _, _ = _cells(kind, 16)
    params, xs, state = _problem(kind, 16, (4,), steps=4, inputs=3)
    lengths = jnp.array([4, 0, 2, 3])
    f = lambda p, x, s: jnp.sum(jnp.sin(_scan(cell, p, x, s, lengths=lengths)[1]))  # noqa: E731
    check_grads(f, (params, xs, state), order=2, modes=["fwd", "rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


_AVX2_CHECK = """
import numpy as np, jax, jax.numpy as jnp, recurrax as rx
from recurrax.backends.cpu import build
from reference import gru, lstm, run, random_inputs, random_params, random_state, to_numpy
assert build.load() is not None
for kind, step in (("lstm", lstm), ("gru", gru)):
    cell = {"lstm": rx.lstm, "gru": rx.gru}[kind](48)  # 6 vectors of 8: a 4-vector chunk and a 2-vector one
    native = "native_" + kind
    params = jax.tree.map(lambda w: w / 2, random_params(cell, 0, 5))
    xs, state = random_inputs((7, 6, 5), 1), random_state(cell, params, (7,), 2, 0.5)
    jaxpr = jax.make_jaxpr(lambda p: rx.scan(cell, p, xs, state, backend=native))(params)
    assert "recurrax_" + kind + "_forward" in str(jaxpr)
    ys = rx.scan(cell, params, xs, state, backend=native)[1]
    np.testing.assert_allclose(ys, run(step, to_numpy(params), xs, to_numpy(state))[1], atol=2e-5, rtol=2e-5)
    loss = lambda b, p: jnp.sum(jnp.sin(rx.scan(cell, p, xs, state, backend=b)[1]))
    got, want = jax.grad(loss, 1)(native, params), jax.grad(loss, 1)("sequential", params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max(), rtol=1e-5), got, want)
    lengths = jnp.array([6, 0, 3, 1, 6, 2, 4])  # 3-row tiles of mixed lengths
    ragged = lambda b, p: jnp.sum(jnp.sin(rx.scan(cell, p, xs, state, lengths=lengths, backend=b)[1]))
    got, want = jax.value_and_grad(ragged, 1)(native, params), jax.value_and_grad(ragged, 1)("sequential", params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max(), rtol=1e-5), got, want)
print("ok")
"""


def test_the_avx2_kernels(tmp_path):
    """The 8-wide kernels (3-row tiles) that machines without AVX-512 build: values and gradients."""
    env = dict(os.environ, CXXFLAGS="-mno-avx512f", RECURRAX_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_build_is_cached_and_keyed(tmp_path, monkeypatch):
    # A stand-in compiler that counts its runs and writes the `-o` file: the caching logic, not g++, is under test
    # (every other test here loads the kernels the real compiler built).
    runs = tmp_path / "runs"
    script = tmp_path / "cxx"
    script.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo fake 1.0; exit 0; fi\n'
        f'echo run >> "{runs}"\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo lib > "$2"; fi; shift; done\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.delenv("CXXFLAGS", raising=False)
    tmp_path = tmp_path / "cache"
    first = build.build(tmp_path)
    assert first.exists() and build.build(tmp_path) == first
    assert first.name.startswith("recurrax_native_") and list(tmp_path.iterdir()) == [first]
    monkeypatch.setenv("CXXFLAGS", "-DRECURRAX_UNUSED_MACRO")  # other flags: another library, the first one kept
    second = build.build(tmp_path)
    assert second != first and sorted(tmp_path.iterdir()) == sorted([first, second])
    assert runs.read_text().count("run") == 2  # the second call of each key compiled nothing


def test_a_missing_compiler_is_an_error_and_load_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        build.build(tmp_path)
    monkeypatch.setenv("RECURRAX_CACHE_DIR", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.load.__wrapped__() is None
    assert any("native CPU kernels are unavailable" in str(w.message) for w in caught)


def test_a_compile_error_reports_the_compiler_output(tmp_path, monkeypatch):
    script = tmp_path / "cxx"
    script.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo fake; exit 0; fi\necho "error: broken" >&2\nexit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    with pytest.raises(RuntimeError, match="error: broken"):
        build.build(tmp_path)
