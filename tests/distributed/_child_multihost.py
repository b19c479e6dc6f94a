"""One of two processes of a multi-process JAX run on this machine (2 forced CPU devices each).

Started by test_multihost.py as ``_child_multihost.py PROCESS_ID PORT``; the coordinator is the
loopback address only. Each process feeds its half of a batch, the data-parallel step runs over the
4 devices of both processes (gradients all-reduced across processes by XLA's CPU collectives), and
each process compares the global result with the one-device step it computes on the whole batch.
"""

from __future__ import annotations

import json
import sys

import jax

PROCESS_ID, PORT = int(sys.argv[1]), int(sys.argv[2])
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID, initialization_timeout=60
)

import chex  # noqa: E402
import numpy as np  # noqa: E402
from _models import data, grad_step, init_params  # noqa: E402
from _multidevice import check, main  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from recurrax import distributed as dist  # noqa: E402

VALUES = {}


@check
def sees_its_local_devices_and_the_global_ones():
    assert (jax.process_index(), jax.process_count()) == (PROCESS_ID, 2)
    assert jax.local_device_count() == 2 and jax.device_count() == 4
    assert {d.process_index for d in jax.local_devices()} == {PROCESS_ID}
    assert sorted(d.process_index for d in jax.devices()) == [0, 0, 1, 1]


@check
def data_parallel_step_across_processes_equals_one_device():
    xs, targets = data(8)
    mesh = dist.make_mesh()  # 4 devices, 2 per process
    mine = slice(4 * PROCESS_ID, 4 * PROCESS_ID + 4)  # this process's rows of the global batch
    batch = dist.shard_batch((xs[mine], targets[mine]), mesh)
    assert batch[0].shape == (8, *xs.shape[1:]) and not batch[0].is_fully_addressable
    assert {s.data.shape[0] for s in batch[0].addressable_shards} == {2}
    (loss, _), grads = grad_step(dist.shard_params(init_params(), mesh), *batch)
    local = lambda x: np.asarray(x.addressable_data(0))  # noqa: E731  (replicated: every copy is the result)
    loss, grads = local(loss), jax.tree.map(local, grads)

    one = jax.local_devices()[0]
    (loss1, _), grads1 = grad_step(*jax.device_put((init_params(), xs, targets), one))
    chex.assert_trees_all_close((loss, grads), (loss1, grads1), rtol=1e-5, atol=1e-5)
    # Both processes hold the same numbers: gather every process's loss and compare.
    losses = multihost_utils.process_allgather(loss)
    assert losses.shape == (2,) and losses[0] == losses[1], losses
    VALUES["loss"] = float(loss)


if __name__ == "__main__":
    main()
    print("@@values@@ " + json.dumps(VALUES), flush=True)
    jax.distributed.shutdown()
