"""Peak memory of one LSTM training step on a very long sequence, with and without sqrt(T) checkpointing.

Measures what XLA's compiler reports for the jitted step (``compiled.memory_analysis()``): the temporary
buffers the step allocates (``temp_size_in_bytes``, where the stored intermediates live) next to the
arguments and outputs, then runs the step once to time it. Two losses: on the final state only (the
memory is then all intermediates), and on every output (the outputs' cotangents, ``T x B x H``, must exist
either way). Run::

    python examples/long_sequence_memory.py --steps 100000 --batch 2 --hidden 32
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

import recurrax as rx
from recurrax.long_sequences import checkpointed_scan


def measure(num_steps: int, batch: int, hidden: int, inputs: int, *, checkpoint: bool, loss: str) -> dict:
    """Compiles (and runs once) a ``value_and_grad`` step; returns its memory analysis in MiB and its time."""
    cell = rx.lstm(hidden)
    params = cell.init(jax.random.key(0), inputs)
    xs = jax.random.normal(jax.random.key(1), (batch, num_steps, inputs))
    run = checkpointed_scan if checkpoint else rx.scan

    def loss_fn(params, xs):
        final, ys = run(cell, params, xs)
        return jnp.mean(final.h**2) if loss == "final" else jnp.mean(ys**2)

    step = jax.jit(jax.value_and_grad(loss_fn))
    compiled = step.lower(params, xs).compile()
    mem = compiled.memory_analysis()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, xs))
    mib = 1 / 2**20
    return {
        "temp_MiB": mem.temp_size_in_bytes * mib,
        "args_MiB": mem.argument_size_in_bytes * mib,
        "out_MiB": mem.output_size_in_bytes * mib,
        "run_s": time.perf_counter() - start,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--inputs", type=int, default=8)
    args = p.parse_args(argv)
    print(
        f"LSTM T={args.steps} B={args.batch} H={args.hidden} I={args.inputs}, segments of "
        f"{math.ceil(math.sqrt(args.steps))} steps; jax {jax.__version__} on {jax.devices()[0].device_kind}"
    )
    print(f"{'loss':<8}{'scan':<14}{'temp MiB':>10}{'args MiB':>10}{'out MiB':>10}{'run s':>8}")
    for loss in ("final", "outputs"):
        for checkpoint in (False, True):
            r = measure(args.steps, args.batch, args.hidden, args.inputs, checkpoint=checkpoint, loss=loss)
            name = "checkpointed" if checkpoint else "plain"
            print(
                f"{loss:<8}{name:<14}{r['temp_MiB']:>10.2f}{r['args_MiB']:>10.2f}{r['out_MiB']:>10.2f}{r['run_s']:>8.2f}"
            )


if __name__ == "__main__":
    main()
