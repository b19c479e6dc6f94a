"""Checks run on 8 forced CPU devices (started by test_data_parallel.py, test_sequence_parallel.py, ...)."""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from _models import HIDDEN, INPUTS, STEPS, data, grad_step, init_params
from _multidevice import check, main
from jax.sharding import AxisType, PartitionSpec

import recurrax as rx
from recurrax import distributed as dist
from recurrax.cells.linear import lru, min_gru, min_lstm
from recurrax.sequence_parallel import sequence_parallel_scan

RULE = dist.by_path({r"cell/w_[ih]$": PartitionSpec(None, "model"), r"Dense_0/kernel$": PartitionSpec("model")})
TOL = {"rtol": 1e-5, "atol": 1e-5}


def on_one_device(tree):
    return jax.device_put(tree, jax.devices()[0])


def assert_split(array, mesh_axis_size, batch):
    """The array's leading axis is cut into `mesh_axis_size` different pieces, one per device."""
    shards = array.addressable_shards
    assert len({s.device for s in shards}) == len(jax.devices()) == 8
    starts = sorted({s.index[0].start or 0 for s in shards})
    assert starts == list(range(0, batch, batch // mesh_axis_size)), starts
    assert {s.data.shape[0] for s in shards} == {batch // mesh_axis_size}


@check
def data_parallel_step_equals_one_device_replicated_params():
    mesh = dist.make_mesh()  # ("data": 8)
    params, (xs, targets) = init_params(), data(8)
    (loss1, ys1), grads1 = grad_step(on_one_device(params), *on_one_device((xs, targets)))
    sharded = dist.shard_batch((xs, targets), mesh)
    assert sharded[0].sharding.spec == PartitionSpec("data")
    assert_split(sharded[0], 8, 8)
    (loss8, ys8), grads8 = grad_step(dist.shard_params(params, mesh), *sharded)
    assert_split(ys8, 8, 8)  # the outputs stay split: each device ran its own rows
    assert all(g.sharding.is_fully_replicated for g in jax.tree.leaves(grads8))  # all-reduced
    chex.assert_trees_all_close((loss8, ys8, grads8), (loss1, ys1, grads1), **TOL)
    assert float(jnp.max(jnp.abs(grads1["RNN_0"]["cell"]["w_h"]))) > 1e-3  # the gradients are not trivially 0


@check
def data_parallel_step_equals_one_device_params_sharded_by_rule():
    mesh = dist.make_mesh((4, 2), ("data", "model"))
    params, (xs, targets) = init_params(), data(8)
    placed = dist.shard_params(params, mesh, RULE)
    w_i = placed["RNN_0"]["cell"]["w_i"]
    assert w_i.sharding.spec == PartitionSpec(None, "model")
    assert {s.data.shape for s in w_i.addressable_shards} == {(INPUTS, 4 * HIDDEN // 2)}
    assert placed["RNN_0"]["cell"]["b"].sharding.is_fully_replicated
    (loss1, ys1), grads1 = grad_step(on_one_device(params), *on_one_device((xs, targets)))
    (loss8, ys8), grads8 = grad_step(placed, *dist.shard_batch((xs, targets), mesh))
    assert {s.data.shape[0] for s in ys8.addressable_shards} == {2}
    chex.assert_trees_all_close((loss8, ys8, grads8), (loss1, ys1, grads1), **TOL)


@check
def indivisible_batch_raises_with_both_numbers_or_pads_by_choice():
    mesh = dist.make_mesh()
    xs, targets = data(6)
    try:
        dist.shard_batch((xs, targets), mesh)
    except ValueError as err:
        assert "batch size 6" in str(err) and "not divisible by 8" in str(err) and "'data'" in str(err), err
    else:
        raise AssertionError("a batch of 6 on 8 devices must raise")
    (pxs, ptargets), weights = dist.shard_batch((xs, targets), mesh, pad=True)
    assert pxs.shape == (8, STEPS, INPUTS) and weights.shape == (8,)
    np.testing.assert_array_equal(np.asarray(weights), [1.0] * 6 + [0.0] * 2)
    np.testing.assert_array_equal(np.asarray(pxs)[:6], xs)
    params = init_params()
    (loss1, _), grads1 = grad_step(on_one_device(params), *on_one_device((xs, targets)))
    (loss8, _), grads8 = grad_step(dist.shard_params(params, mesh), pxs, ptargets, weights)
    chex.assert_trees_all_close((loss8, grads8), (loss1, grads1), **TOL)


@check
def rules_that_do_not_fit_name_the_leaf():
    mesh = dist.make_mesh((4, 2), ("data", "model"))
    params = init_params()
    cases = [
        (dist.by_path({"Dense_0/bias$": PartitionSpec("data")}), "Dense_0/bias", "size 2 into 4 parts"),
        (dist.by_path({"Dense_0/bias$": PartitionSpec(None, "model")}), "Dense_0/bias", "too few axes"),
        (dist.by_path({"w_i$": PartitionSpec("expert")}), "RNN_0/cell/w_i", "no axis 'expert'"),
    ]
    for rule, path, words in cases:
        try:
            dist.param_shardings(params, mesh, rule)
        except ValueError as err:
            assert path in str(err) and words in str(err), err
        else:
            raise AssertionError(f"{path}: expected a ValueError")
    for shapes, words in [
        ((3,), "multiply to the number of devices, 8, got 3"),
        ((-1, 3), "take 3 devices, which does not divide the 8 devices"),
    ]:
        try:
            dist.make_mesh(shapes, ("data", "model")[: len(shapes)])
        except ValueError as err:
            assert words in str(err), err
        else:
            raise AssertionError(f"{shapes}: expected a ValueError")


def min_gru_numpy(params, xs, h):
    """minGRU's sequential equations (Feng et al., 2024) in NumPy: h' = (1 - u) h + u g(k_h)."""
    w, b = np.asarray(params["w_i"], np.float64), np.asarray(params["b"], np.float64)
    h, out = np.asarray(h, np.float64), []
    for x in np.moveaxis(np.asarray(xs, np.float64), -2, 0):
        k_z, k_h = np.split(x @ w + b, 2, axis=-1)
        u = 1 / (1 + np.exp(-k_z))
        g = np.where(k_h >= 0, k_h + 0.5, 1 / (1 + np.exp(-k_h)))
        h = (1 - u) * h + u * g
        out.append(h)
    return h, np.stack(out, axis=-2)


def random_state(cell, params, batch, key):
    zeros = cell.initial_state(params, batch)
    keys = jax.random.split(key, len(jax.tree.leaves(zeros)))
    leaves = [jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, jax.tree.leaves(zeros))]
    return jax.tree.unflatten(jax.tree.structure(zeros), leaves)


@check
def sequence_parallel_min_gru_equals_numpy_equations():
    for axis_type, log_space in ((AxisType.Auto, False), (AxisType.Explicit, True)):
        mesh = dist.make_mesh((8,), ("time",), axis_types=(axis_type,))
        cell = min_gru(6, log_space=log_space)
        params = cell.init(jax.random.key(0), 3)
        xs = jax.random.normal(jax.random.key(1), (2, 64, 3))
        state = random_state(cell, params, (2,), jax.random.key(2))  # negative entries too
        run = jax.jit(functools.partial(sequence_parallel_scan, cell, mesh=mesh))
        final, ys = run(params, xs, state)
        assert ys.sharding.spec[1] == "time" and {s.data.shape for s in ys.addressable_shards} == {(2, 8, 6)}
        h_ref, ys_ref = min_gru_numpy(params, xs, state.h)
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final.h, h_ref, rtol=1e-5, atol=1e-5)


def _loss(final, ys):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.abs(s) ** 2) for s in jax.tree.leaves(final))


def _values_and_grads(run, params, state, xs):
    out = run(params, xs, state)
    return out, jax.grad(lambda p, s: _loss(*run(p, xs, s)), argnums=(0, 1))(params, state)


@check
def sequence_parallel_equals_sequential_scan_values_and_grads():
    mesh = dist.make_mesh((8,), ("time",))
    for cell, time_major in ((min_lstm(5), False), (lru(5, 4), True)):  # real log-space and complex recurrences
        params = cell.init(jax.random.key(3), 3)
        xs = jax.random.normal(jax.random.key(4), (40, 3, 3) if time_major else (3, 40, 3))
        state = random_state(cell, params, (3,), jax.random.key(5))
        seq = functools.partial(rx.scan, cell, backend="sequential", time_major=time_major)
        par = functools.partial(sequence_parallel_scan, cell, mesh=mesh, time_major=time_major)
        both = jax.jit(
            lambda p, s, x, seq=seq, par=par: (_values_and_grads(seq, p, s, x), _values_and_grads(par, p, s, x))
        )
        (want, g_want), (got, g_got) = both(params, state, xs)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(g_got, g_want, rtol=1e-4, atol=1e-5)


@check
def sequence_parallel_with_the_batch_split_too():
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = dist.make_mesh((2, 4), ("data", "time"), axis_types=(axis_type,) * 2)
        cell = min_gru(6)
        params = cell.init(jax.random.key(6), 3)
        xs = jax.random.normal(jax.random.key(7), (4, 32, 3))
        state = random_state(cell, params, (4,), jax.random.key(8))
        run = jax.jit(functools.partial(sequence_parallel_scan, cell, mesh=mesh, batch_axis="data"))
        final, ys = run(params, xs, state)
        assert {s.data.shape for s in ys.addressable_shards} == {(2, 8, 6)}  # batch in 2, time in 4
        h_ref, ys_ref = min_gru_numpy(params, xs, state.h)
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final.h, h_ref, rtol=1e-5, atol=1e-5)
    try:
        sequence_parallel_scan(cell, params, xs[:3], mesh=mesh, batch_axis="data")
    except ValueError as err:
        assert "batch size 3 is not divisible by 2" in str(err), err
    else:
        raise AssertionError("a batch of 3 over a data axis of 2 must raise")


@check
def sequence_parallel_rejects_bad_input():
    mesh = dist.make_mesh((8,), ("time",))
    cell = min_gru(4)
    params = cell.init(jax.random.key(0), 3)
    lstm = rx.lstm(4)
    sp = functools.partial(sequence_parallel_scan, mesh=mesh)
    cases = [
        (lambda: sp(cell, params, jnp.ones((2, 60, 3))), ValueError, "T=60", "by 8"),
        (lambda: sp(cell, params, jnp.ones((2, 64, 3)), axis="seq"), ValueError, "'seq'"),
        (lambda: sp(cell, params, jnp.ones((2, 64, 5))), ValueError, "(..., 3)", "(2, 64, 5)"),
        (lambda: sp(lstm, lstm.init(jax.random.key(0), 3), jnp.ones((2, 64, 3))), TypeError, "linear", "'lstm'"),
    ]
    for run, kind, *words in cases:
        try:
            run()
        except kind as err:
            assert all(w in str(err) for w in words), err
        else:
            raise AssertionError(f"expected {kind.__name__} with {words}")


@check
def save_sharded_checkpoint():
    mesh = dist.make_mesh((4, 2), ("data", "model"))
    placed = dist.shard_params(init_params(), mesh, RULE)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(sys.argv[1], placed)


@check
def train_sharded_example_runs_and_restores_its_checkpoint():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import train_sharded

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--steps", "3", "--batch", "16", "--length", "6", "--shard-kernels", "--checkpoint", tmp]
        metrics = train_sharded.main(argv)
    assert metrics["devices"] == 8 and metrics["checkpoint_identical"] and np.isfinite(metrics["final_loss"])


def _sharded_step(apply, params, xs, lengths):
    """``value_and_grad`` of a loss of ``apply``'s outputs and final state, w.r.t. the params and the inputs."""

    def loss(p, xs, lengths):
        final, ys = apply(p, xs, lengths)
        return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), ys

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def _backend_cases():
    """(label, apply, params): every backend this machine runs, alone and inside stacked/bidirectional layers."""
    hidden, inputs = 16, 4
    cells = {"lstm": rx.lstm(hidden), "gru": rx.gru(hidden), "min_gru": min_gru(hidden)}
    backends = {
        "lstm": ("native_lstm", "xla_lstm", "sequential"),
        "gru": ("native_gru", "xla_gru", "sequential"),
        "min_gru": ("associative", "chunked"),
    }
    key = jax.random.key(0)
    for kind, cell in cells.items():
        for backend in backends[kind]:
            # With lengths (ragged, one empty): the fast paths' freezing and masking run too.
            def apply(p, xs, lengths, cell=cell, backend=backend):
                return rx.scan(cell, p, xs, lengths=lengths, backend=backend)

            yield f"{kind}/{backend}", apply, cell.init(key, inputs)
    for backend in ("native_lstm", "xla_lstm"):
        layer = rx.stacked([rx.bidirectional(rx.lstm(hidden), rx.lstm(hidden)), rx.lstm(hidden)], backend=backend)

        def apply(p, xs, lengths, layer=layer):
            return layer.apply(p, xs, lengths=lengths)

        yield f"stacked(bidirectional)/{backend}", apply, layer.init(key, inputs)


@check
def every_backend_keeps_the_batch_sharded_in_the_compiled_step():
    """Read from the compiled HLO: no all-gather at all (params are replicated, so any would gather activations),
    outputs and input gradients split like the inputs, per-device FLOPs about 1/8 of one device's; values equal
    one device's."""
    mesh = dist.make_mesh()
    batch, steps, inputs = 16, 8, 4
    xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))
    lengths = jnp.arange(batch, dtype=jnp.int32) % (steps + 1)
    sharded = dist.shard_batch((xs, lengths), mesh)
    for label, apply, params in _backend_cases():
        step = _sharded_step(apply, params, xs, lengths)
        compiled = step.lower(dist.shard_params(params, mesh), *sharded).compile()
        text = compiled.as_text()
        assert "all-gather" not in text, (
            f"{label}: the compiled step gathers: " + text[text.find("all-gather") - 300 :][:600]
        )
        (loss8, ys8), (gp8, gx8) = compiled(dist.shard_params(params, mesh), *sharded)
        assert ys8.sharding.spec == PartitionSpec("data") and gx8.sharding.spec == PartitionSpec("data"), label
        assert_split(ys8, 8, batch)
        single = step.lower(*on_one_device((params, xs, lengths))).compile()
        flops8, flops1 = compiled.cost_analysis()["flops"], single.cost_analysis()["flops"]
        assert 0.08 < flops8 / flops1 < 0.2, f"{label}: per-device FLOPs {flops8} against {flops1} on one device"
        (loss1, ys1), grads1 = single(*on_one_device((params, xs, lengths)))
        chex.assert_trees_all_close((loss8, ys8, (gp8, gx8)), (loss1, ys1, grads1), **TOL, custom_message=label)


if __name__ == "__main__":
    main()
