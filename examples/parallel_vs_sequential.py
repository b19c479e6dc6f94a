"""minGRU on a parallel scan against a sequential LSTM, on the same long-memory task, side by side.

The task: recall the first symbol. Each sequence starts with one of ``K`` symbols (one-hot) followed
by ``T - 1`` blank steps, and the target is that first symbol, read from the final state. Guessing
scores ``log K`` nats and ``1/K`` accuracy; doing better needs a memory that survives ``T`` steps.
minGRU's gates see the input only (Feng et al., 2024), so ``recurrax.scan`` runs it in parallel over
time (``--backend``); the LSTM runs step after step. Both get the same hidden size, optimiser,
batches and chrono initialisation of their gate biases (memory timescales spread up to ``T`` steps,
Tallec & Ollivier, 2018). The script reports the time and steps each needs to reach ``--target``
(cross-entropy, nats), the milliseconds per training step, and the held-out accuracy.

Run: python examples/parallel_vs_sequential.py --out runs/parallel_vs_sequential    (full run)
     python examples/parallel_vs_sequential.py --quick                               (CI-sized)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax as rx
from recurrax import linear_scan
from recurrax.cells.linear import min_gru

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common


def recall_batch(key: jax.Array, batch: int, T: int, K: int) -> tuple[jax.Array, jax.Array]:
    """``xs (batch, T, K)``: a one-hot symbol at step 0, zeros after; targets ``(batch,)``: that symbol."""
    symbols = jax.random.randint(key, (batch,), 0, K)
    return jnp.zeros((batch, T, K)).at[:, 0].set(jax.nn.one_hot(symbols, K)), symbols


def train(cell: rx.Cell, backend: str, args, key: jax.Array, name: str) -> dict:
    """Trains ``cell`` + a linear read-out of its final output with Adam; returns timings and accuracy."""
    K = args.symbols
    k_cell, k_head, k_test, key = jax.random.split(key, 4)
    params = {
        "cell": cell.init(k_cell, K),
        "head": {"w": jax.random.normal(k_head, (args.hidden, K)) / math.sqrt(args.hidden), "b": jnp.zeros(K)},
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    opt_state = tx.init(params)

    def logits(params, xs):
        final, _ = rx.scan(cell, params["cell"], xs, backend=backend)
        return cell.output(final) @ params["head"]["w"] + params["head"]["b"]

    def loss_fn(params, xs, ys):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, xs), ys).mean()

    @jax.jit
    def train_step(params, opt_state, key):
        xs, ys = recall_batch(key, args.batch, args.T, K)
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, ys)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    test_xs, test_ys = recall_batch(k_test, 256 if args.quick else 1024, args.T, K)
    accuracy = jax.jit(lambda params: jnp.mean(jnp.argmax(logits(params, test_xs), -1) == test_ys))
    compile_start = time.perf_counter()
    jax.block_until_ready(train_step(params, opt_state, key))  # compiled outside the timed loop
    compile_s = time.perf_counter() - compile_start
    progress = _common.Progress(f"parallel_vs_sequential/{name}", args.steps, args.epochs)
    step_times, recent, reached = [], [], None
    for step, k in enumerate(jax.random.split(key, args.steps), start=1):
        start = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, k)
        loss = float(loss)  # blocks, so the step is timed whole
        step_times.append(time.perf_counter() - start)
        recent.append(loss)
        if reached is None and np.mean(recent[-10:]) < args.target:
            reached = {"step": step, "seconds": float(np.sum(step_times))}
        if progress.epoch_ends(step):
            progress.line(step, loss=float(np.mean(recent)), accuracy=float(accuracy(params)))
            recent = recent[-10:]
    return {
        "backend": backend,
        "reached_target": reached,
        "ms_per_step": 1e3 * float(np.median(step_times)),
        "train_seconds": float(np.sum(step_times)),
        "compile_seconds": compile_s,
        "final_loss": float(np.mean(recent)),
        "test_accuracy": float(accuracy(params)),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=600, quick_steps=20, epochs=6)
    p.add_argument("--T", type=int, default=256, help="sequence length")
    p.add_argument("--symbols", type=int, default=8, help="K, the alphabet size")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--target", type=float, default=0.1, help="cross-entropy (nats) whose first crossing is timed")
    p.add_argument("--backend", default="associative", help="minGRU's backend: associative, chunked, sequential, auto")
    args = _common.parse(p, argv)
    if args.quick:
        args.T, args.hidden = min(args.T, 64), min(args.hidden, 16)
    chance = math.log(args.symbols)
    key_gru, key_lstm = jax.random.split(jax.random.key(args.seed))
    backend = linear_scan.choose(args.T)[0] if args.backend == "auto" else args.backend
    print(
        f"[parallel_vs_sequential] recall the first of T={args.T} symbols (K={args.symbols}): chance {chance:.3f} nats"
    )
    results = {
        "min_gru": train(min_gru(args.hidden, chrono_t_max=args.T), backend, args, key_gru, f"min_gru[{backend}]"),
        "lstm": train(rx.lstm(args.hidden, chrono_t_max=args.T), "sequential", args, key_lstm, "lstm"),
    }
    print(f"| model | backend | ms/step | steps to loss < {args.target} | seconds to it | test accuracy |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        hit = r["reached_target"]
        when = (f"{hit['step']}", f"{hit['seconds']:.1f}") if hit else ("not reached", "-")
        print(
            f"| {name} | {r['backend']} | {r['ms_per_step']:.1f} | {when[0]} | {when[1]} | {r['test_accuracy']:.3f} |"
        )
    metrics = {"T": args.T, "symbols": args.symbols, "chance_loss": chance, **results}
    return _common.write_metrics(args.out, "parallel_vs_sequential", metrics, args)


if __name__ == "__main__":
    main()
