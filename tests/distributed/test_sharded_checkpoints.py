"""Checkpoints of sharded params with orbax: written on 8 devices, read on 2 and on 1; faults.

Reference: the params before saving (bit-identical after a restore, whatever the device count and
layout). A target of another model shape fails naming the leaf; a save killed before orbax commits
it is never read back as a checkpoint.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _models import init_params
from _multidevice import assert_ok, finish, run_checks

from recurrax import distributed as dist

ocp = pytest.importorskip("orbax.checkpoint")


@pytest.fixture(scope="module")
def two_devices(eight_devices):
    assert_ok(eight_devices[0], "save_sharded_checkpoint")
    return run_checks("_child_restore.py", str(eight_devices[1]), devices=2)


@pytest.mark.parametrize(
    "name", ["restores_onto_two_devices_with_a_new_layout", "incompatible_model_shape_names_the_path"]
)
def test_on_two_devices(two_devices, name):
    assert_ok(two_devices, name)


def test_restores_onto_one_device(eight_devices):
    assert_ok(eight_devices[0], "save_sharded_checkpoint")
    expected = init_params()
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dist.replicated(dist.make_mesh())), expected
    )
    restored = dist.restore_checkpoint(eight_devices[1], target)
    assert all(len(x.addressable_shards) == 1 for x in jax.tree.leaves(restored))
    jax.tree.map(np.testing.assert_array_equal, restored, expected)


def test_a_target_with_another_structure_names_the_leaf(eight_devices):
    assert_ok(eight_devices[0], "save_sharded_checkpoint")
    target = jax.eval_shape(init_params)
    del target["Dense_0"]["bias"]
    with pytest.raises(ValueError, match=r"`Dense_0/bias` is in the checkpoint at .* but not in the target"):
        dist.restore_checkpoint(eight_devices[1], target)
    target = jax.eval_shape(init_params)
    target["RNN_0"]["cell"]["b"] = jax.ShapeDtypeStruct((64,), np.float16)
    with pytest.raises(ValueError, match=r"`RNN_0/cell/b` has dtype float32 .* the target expects float16"):
        dist.restore_checkpoint(eight_devices[1], target)


def test_a_save_killed_before_its_commit_is_never_read(children):
    tmp_path = children["killed_save"]
    code, out, err = finish(children["procs"]["killed_save"], timeout=300)
    assert "step 0 saved" in out and "killing mid-save" in out, out + err
    assert code == -9 and "step 1 saved" not in out  # SIGKILL in the middle of saving step 1
    # What the kill left: step 1's data in orbax's temporary directory, never renamed into place.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1.orbax-checkpoint-tmp"]

    with ocp.CheckpointManager(tmp_path) as manager:
        assert manager.all_steps() == [0] and manager.latest_step() == 0
        restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(jax.eval_shape(init_params)))
    jax.tree.map(np.testing.assert_array_equal, restored, init_params())  # step 0, intact

    target = jax.eval_shape(init_params)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        dist.restore_checkpoint(tmp_path / "1" / "default", target)
    # Even pointed at the half-written data (whose item directory orbax itself would read), it refuses.
    with pytest.raises(ValueError, match=r"incomplete checkpoint .* never committed: 1.orbax-checkpoint-tmp"):
        dist.restore_checkpoint(tmp_path / "1.orbax-checkpoint-tmp" / "default", target)
