"""The backends of ``recurrax.scan`` for linear recurrences (recurrax.linear_scan).

References: the recurrence ``s_t = a_t s_{t-1} + b_t`` stepped in float64 NumPy, and the sequential
backend, which steps ``cell.transition`` (the papers' sequential equations, checked against NumPy in
``test_linear_cells.py``) one step at a time.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from recurrax import linear_scan as ls
from recurrax.cells.linear import lru, min_gru, min_lstm

PARALLEL = ("associative", "chunked")


def np_recurrence(a, b, s0):
    s, out = np.asarray(s0), []
    for t in range(a.shape[0]):
        s = a[t] * s + b[t]
        out.append(s)
    return np.stack(out)


@pytest.mark.parametrize(
    "backend, chunk", [("sequential", None), ("associative", None), ("chunked", 7), ("chunked", 64), ("auto", None)]
)
@pytest.mark.parametrize("kind", ["real", "complex", "log"])
def test_linear_scan_matches_numpy(kind, backend, chunk):
    rng = np.random.default_rng(0)
    T, shape = 50, (2, 3)
    a = rng.uniform(0.5, 1.0, (T, *shape))
    b = rng.normal(size=(T, *shape))
    s0 = rng.normal(size=shape)
    if kind == "complex":
        a = a * np.exp(1j * rng.uniform(0, np.pi, a.shape))
        b = b + 1j * rng.normal(size=b.shape)
        s0 = s0 + 1j * rng.normal(size=shape)
    if kind == "log":
        b = np.abs(b)
        args = (np.log(a), np.log(b))
    else:
        args = (a, b)
    dtype = jnp.complex64 if kind == "complex" else jnp.float32
    got = ls.linear_scan(
        *(jnp.asarray(x, dtype) for x in args),
        jnp.asarray(s0, dtype),
        backend=backend,
        chunk_size=chunk,
        log_space=kind == "log",
    )
    chex.assert_trees_all_close(got, np_recurrence(a, b, s0), rtol=2e-5, atol=2e-5)


def test_linear_scan_single_step_and_bad_input():
    one = ls.linear_scan(jnp.full((1, 2), 0.5), jnp.ones((1, 2)), jnp.full((2,), 4.0), backend="chunked")
    chex.assert_trees_all_close(one, jnp.full((1, 2), 3.0))
    with pytest.raises(ValueError, match=r"linear_scan: `a` and `b` must have one shape.*got a \(3, 2\), b \(3, 4\)"):
        ls.linear_scan(jnp.ones((3, 2)), jnp.ones((3, 4)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"`s0` shape \(\*batch, S\).*s0 \(3,\)"):
        ls.linear_scan(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"`backend` must be one of .*got 'parallel'"):
        ls.linear_scan(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(2), backend="parallel")
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int, got 0"):
        ls.linear_scan(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(2), backend="chunked", chunk_size=0)


def test_choose_names_a_backend_for_every_platform():
    for platform in ("cpu", "gpu", "tpu", "other"):
        backend, chunk = ls.choose(1000, platform)
        assert backend in ("sequential", *PARALLEL) and (backend != "chunked" or chunk >= 1)


CELLS = {
    "min_gru": lambda: min_gru(4),
    "min_lstm": lambda: min_lstm(3, log_space=False),
    "lru": lambda: lru(3, 2, r_min=0.9, r_max=0.999),
}


def _random_state(cell, params, batch, key):
    """An initial state with every leaf random (complex where the cell's is)."""
    zeros = cell.initial_state(params, batch)
    keys = jax.random.split(key, len(jax.tree.leaves(zeros)))
    leaves = [
        jax.random.normal(k, z.shape, jnp.float32) * (1 + 1j if jnp.iscomplexobj(z) else 1)
        for k, z in zip(keys, jax.tree.leaves(zeros))
    ]
    return jax.tree.unflatten(
        jax.tree.structure(zeros), [x.astype(z.dtype) for x, z in zip(leaves, jax.tree.leaves(zeros))]
    )


def _run(cell, backend, **kw):
    return jax.jit(lambda p, xs, s, lengths: rx.scan(cell, p, xs, s, lengths=lengths, backend=backend, **kw))


@pytest.mark.parametrize(
    "name, reverse, with_lengths",
    [("min_gru", False, True), ("min_lstm", True, False), ("lru", False, True), ("lru", True, True)],
)
def test_states_lengths_reverse_initial_state_short(name, reverse, with_lengths):
    cell = CELLS[name]()
    kp, kx, ks = jax.random.split(jax.random.PRNGKey(0), 3)
    params = cell.init(kp, 5)
    xs = jax.random.normal(kx, (3, 2, 37, 5))  # two batch dims
    s0 = _random_state(cell, params, (3, 2), ks)
    lengths = jnp.array([[37, 20], [0, 1], [36, 5]])
    kw = dict(return_states=True, include_initial=True, reverse=reverse)
    lens = lengths if with_lengths else None
    want = _run(cell, "sequential", **kw)(params, xs, s0, lens)
    for backend in PARALLEL:
        got = _run(cell, backend, **kw)(params, xs, s0, lens)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


LONG_T = 8_192


@pytest.mark.parametrize("name, reverse, with_lengths", [("min_gru", True, True), ("lru", False, True)])
def test_backends_agree_with_stepping_at_8k_steps_with_gradients(name, reverse, with_lengths):
    cell = CELLS[name]()
    kp, kx, ks, kw = jax.random.split(jax.random.PRNGKey(1), 4)
    params = cell.init(kp, 2)
    xs = jax.random.normal(kx, (2, LONG_T, 2))
    s0 = _random_state(cell, params, (2,), ks)
    lengths = jnp.array([LONG_T, 5_001]) if with_lengths else None
    weights = jax.random.normal(kw, (2, LONG_T, 3 if name == "lru" else 4))

    def loss_and_grads(backend):
        def loss(p, xs, s):
            final, ys = rx.scan(cell, p, xs, s, lengths=lengths, reverse=reverse, backend=backend)
            # Averaged so that gradients stay O(1) however long the sequence.
            return jnp.mean(ys * weights) + sum(jnp.mean(jnp.abs(f) ** 2) for f in jax.tree.leaves(final)), ys

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, s0)

    (want_loss, want_ys), want_grads = loss_and_grads("sequential")
    for backend in PARALLEL:
        (got_loss, got_ys), got_grads = loss_and_grads(backend)
        chex.assert_trees_all_close(got_ys, want_ys, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=1e-5)
    if with_lengths:
        assert not np.asarray(want_ys[1, 5_001:]).any()  # padded outputs are zero


@pytest.mark.parametrize("backend", PARALLEL)
def test_streaming_in_chunks_equals_one_call(backend):
    cell = CELLS["lru"]()
    params = cell.init(jax.random.PRNGKey(0), 3)
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 300, 3))
    run = jax.jit(lambda xs, s: rx.scan(cell, params, xs, s, backend=backend))
    final, ys = run(xs, None)
    state, parts = cell.initial_state(params, (2,)), []
    for lo, hi in ((0, 100), (100, 300)):
        state, y = run(xs[:, lo:hi], state)
        parts.append(y)
    chex.assert_trees_all_close(jnp.concatenate(parts, axis=1), ys, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(state, final, rtol=1e-5, atol=1e-5)


def test_vmap_equals_loop_and_remat():
    cell = CELLS["min_gru"]()
    params = cell.init(jax.random.PRNGKey(0), 3)
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 20, 3))
    lengths = jnp.array([20, 3, 11, 0])

    def one(x, n):
        return rx.scan(cell, params, x, lengths=n, backend="associative")[1]

    jitted = jax.jit(one)
    looped = jnp.stack([jitted(xs[i], lengths[i]) for i in range(4)])
    chex.assert_trees_all_close(jax.jit(jax.vmap(one))(xs, lengths), looped, rtol=1e-6, atol=1e-6)

    def grads(remat):
        return jax.grad(lambda p: rx.scan(cell, p, xs, backend="chunked", remat=remat)[1].sum())(params)

    chex.assert_trees_all_close(jax.jit(lambda: grads(True))(), jax.jit(lambda: grads(False))(), rtol=1e-5)


def test_auto_and_sequential_for_cells_without_a_linear_recurrence():
    cell = rx.lstm(3)
    params = cell.init(jax.random.PRNGKey(0), 2)
    xs = jnp.ones((1, 4, 2))
    chex.assert_trees_all_close(rx.scan(cell, params, xs, backend="auto"), rx.scan(cell, params, xs))
    for backend in PARALLEL:
        with pytest.raises(
            ValueError,
            match=rf"scan\[lstm\]: backend '{backend}' cannot run this call: '{backend}' runs only a cell that "
            r"declares a linear recurrence",
        ):
            rx.scan(cell, params, xs, backend=backend)
    with pytest.raises(ValueError, match=r"unknown backend 'fast'; valid: 'auto', 'native_lstm'"):
        rx.scan(min_gru(2), min_gru(2).init(jax.random.PRNGKey(0), 2), xs, backend="fast")
