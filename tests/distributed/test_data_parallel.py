"""Data-parallel training of a Flax model with a recurrax LSTM over a mesh of 8 CPU devices.

Reference: the same training computation on one device. The checks run in a child process with
8 forced devices (see _child_sharded.py, which holds their bodies, and _multidevice.py).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _multidevice import assert_ok
from jax.sharding import PartitionSpec

from recurrax import distributed as dist

CHECKS = [
    # loss, outputs and gradients equal one device's to 1e-5; the batch and the outputs are split 8 ways
    "data_parallel_step_equals_one_device_replicated_params",
    # on a (data 4, model 2) mesh with the LSTM kernels' gate columns split over "model" by a rule
    "data_parallel_step_equals_one_device_params_sharded_by_rule",
    # B=6 on 8 devices raises with both numbers; pad=True pads to 8 and the weighted loss equals B=6's
    "indivisible_batch_raises_with_both_numbers_or_pads_by_choice",
    "rules_that_do_not_fit_name_the_leaf",
    # examples/train_sharded.py on a (data 4, model 2) mesh, with its orbax save and restore
    "train_sharded_example_runs_and_restores_its_checkpoint",
    # every backend, alone and in stacked/bidirectional layers: no all-gather in the compiled HLO, outputs
    # and gradients split 8 ways, per-device FLOPs ~1/8, values equal one device's
    "every_backend_keeps_the_batch_sharded_in_the_compiled_step",
]


@pytest.mark.parametrize("name", CHECKS)
def test_on_eight_devices(eight_devices, name):
    assert_ok(eight_devices[0], name)


def test_one_device_mesh_places_the_batch_and_params():
    # The helpers also run where there is a single device (this pytest process).
    mesh = dist.make_mesh()
    assert mesh.shape == {"data": 1}
    xs = np.arange(12.0).reshape(3, 4)
    placed = dist.shard_batch({"xs": xs}, mesh)["xs"]
    assert placed.sharding.spec == PartitionSpec("data")
    np.testing.assert_array_equal(placed, xs)
    params = dist.shard_params({"w": np.ones((2, 3))}, mesh)
    assert params["w"].sharding.is_fully_replicated
    assert dist.local_batch_multiple(mesh) == 1


def test_bad_arguments_raise_clearly():
    mesh = dist.make_mesh()
    with pytest.raises(ValueError, match="no axis 'batch'; its axes are \\('data',\\)"):
        dist.batch_sharding(mesh, "batch")
    with pytest.raises(ValueError, match="share one leading batch size"):
        dist.shard_batch((np.ones((2, 3)), np.ones((3, 3))), mesh)
    with pytest.raises(ValueError, match="distinct names"):
        dist.make_mesh((1, 1), ("data", "data"))
    with pytest.raises(ValueError, match="differ in length"):
        dist.make_mesh((1,), ("data", "model"))
    with pytest.raises(ValueError, match="multiply to the number of devices, 1, got 2"):
        dist.make_mesh((2,), ("data",))
    assert dist.make_mesh((-1, 1), ("data", "model")).shape == {"data": len(jax.devices()), "model": 1}
