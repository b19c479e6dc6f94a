"""Data-parallel training of a Flax model with a recurrax LSTM over every device, one host or several.

The batch is split over a ``"data"`` mesh axis, the params are replicated (or, with ``--shard-kernels``,
the LSTM's gate columns are split over a ``"model"`` axis), and one ``jax.jit`` step does the rest: XLA
inserts the all-reduce of the gradients. The task: tag each step of a noisy sequence with the sign of
the running sum of its first feature.

On one CPU, simulate 8 devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/train_sharded.py --quick

On two hosts (or two processes on one machine, as here), start one process per host with the same
coordinator address; each feeds its own half of every batch::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python examples/train_sharded.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0 &
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python examples/train_sharded.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

``--checkpoint DIR`` saves the sharded params with orbax at the end and restores them onto the mesh.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

import recurrax as rx
from recurrax import distributed
from recurrax.flax.linen import RNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "train_sharded"


class Tagger(nn.Module):
    """LSTM over the sequence, then a per-step two-class read-out."""

    hidden: int = 64

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        return nn.Dense(2)(RNN(rx.lstm(self.hidden))(xs))


def batches(seed: int, batch: int, steps: int, features: int = 4):
    """This process's part of each global batch: ``xs (batch, steps, features)`` and labels ``(batch, steps)``."""
    rng = np.random.default_rng([seed, jax.process_index()])
    while True:
        xs = rng.standard_normal((batch, steps, features)).astype(np.float32)
        yield xs, (np.cumsum(xs[..., 0], axis=1) > 0).astype(np.int32)


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=300, quick_steps=30, epochs=6)
    p.add_argument("--batch", type=int, default=32, help="global batch size (split over the devices)")
    p.add_argument("--length", type=int, default=32, help="sequence length")
    p.add_argument("--shard-kernels", action="store_true", help="split the LSTM kernels over a 'model' axis of 2")
    p.add_argument("--checkpoint", type=Path, default=None, help="save (and restore) the params here with orbax")
    p.add_argument("--coordinator", default=None, help="host:port of process 0, for a multi-process run")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    args = _common.parse(p, argv)
    if args.coordinator:
        # Before any other JAX call: connects the processes; afterwards jax.devices() lists all of theirs.
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    model_axis = 2 if args.shard_kernels else 1
    mesh = distributed.make_mesh((-1, model_axis), ("data", "model"))
    rule = distributed.by_path({r"cell/w_[ih]$": PartitionSpec(None, "model")}) if args.shard_kernels else None
    print(f"[{NAME}] process {jax.process_index()}/{jax.process_count()}, mesh {dict(mesh.shape)}, "
          f"{jax.local_device_count()} local of {jax.device_count()} devices")  # fmt: skip

    model, tx = Tagger(), optax.adam(3e-3)
    params = model.init(jax.random.key(args.seed), jnp.zeros((1, args.length, 4)))["params"]
    params = distributed.shard_params(params, mesh, rule)
    opt_state = tx.init(params)  # the moments inherit the params' shardings

    @jax.jit
    def train_step(params, opt_state, xs, labels):
        def loss_fn(params):
            logits = model.apply({"params": params}, xs)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    local_batch = args.batch // jax.process_count()
    data = batches(args.seed, local_batch, args.length)
    progress = _common.Progress(NAME, args.steps, args.epochs)
    for step in range(1, args.steps + 1):
        xs, labels = distributed.shard_batch(next(data), mesh)
        params, opt_state, loss, accuracy = train_step(params, opt_state, xs, labels)
        if progress.epoch_ends(step):
            progress.line(step, loss=float(loss), accuracy=float(accuracy))
    metrics = {"final_loss": float(loss), "final_accuracy": float(accuracy), "devices": jax.device_count()}

    if args.checkpoint is not None:
        import orbax.checkpoint as ocp

        path = args.checkpoint.resolve() / f"step_{args.steps}"
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, params, force=True)
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
        restored = distributed.restore_checkpoint(path, target)
        same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)))
        print(f"[{NAME}] saved and restored {path}: identical {same}")
        metrics["checkpoint_identical"] = same
    return _common.write_metrics(args.out, NAME, metrics, args)


if __name__ == "__main__":
    main()
