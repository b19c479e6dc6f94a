"""Restores the checkpoint that _child_sharded.py wrote on 8 devices onto this run's devices (2, forced)."""

from __future__ import annotations

import sys

import jax
import numpy as np
from _models import HIDDEN, INPUTS, init_params
from _multidevice import check, main
from jax.sharding import PartitionSpec

from recurrax import distributed as dist

PATH = sys.argv[1]


@check
def restores_onto_two_devices_with_a_new_layout():
    assert jax.device_count() == 2
    mesh = dist.make_mesh((2,), ("data",))
    expected = init_params()
    # Saved with the gate columns split over a "model" axis of 2 on 8 devices; read back with the
    # input rows of w_i split over "data" and everything else replicated.
    shardings = dist.param_shardings(expected, mesh, dist.by_path({"cell/w_i$": PartitionSpec("data")}))
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), expected, shardings)
    restored = dist.restore_checkpoint(PATH, target)
    w_i = restored["RNN_0"]["cell"]["w_i"]
    assert w_i.sharding.spec == PartitionSpec("data")
    assert {s.data.shape for s in w_i.addressable_shards} == {(INPUTS // 2, 4 * HIDDEN)}
    assert restored["Dense_0"]["kernel"].sharding.is_fully_replicated
    jax.tree.map(np.testing.assert_array_equal, restored, expected)


@check
def incompatible_model_shape_names_the_path():
    mesh = dist.make_mesh((2,), ("data",))
    smaller = jax.eval_shape(lambda: init_params(hidden=HIDDEN // 2))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dist.replicated(mesh)), smaller)
    try:
        dist.restore_checkpoint(PATH, target)
    except ValueError as err:
        words = ("`Dense_0/kernel`", f"shape ({HIDDEN}, 2)", f"expects ({HIDDEN // 2}, 2)")
        assert all(w in str(err) for w in words), err
    else:
        raise AssertionError("restoring a hidden size of 16 into 8 must raise")


if __name__ == "__main__":
    main()
