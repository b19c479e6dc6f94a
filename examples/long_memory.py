"""The adding problem (Hochreiter & Schmidhuber, 1997) at T = 200: an LSTM remembers, an Elman RNN cannot.

Each input step carries a random number in [0, 1) and a marker; exactly two steps are marked, one
in each half of the sequence, and the target is the sum of the two marked numbers. Predicting the
mean, 1, scores the trivial MSE ``Var(u1 + u2) = 2/12 = 0.167``; doing better needs information
carried across up to 200 steps. The LSTM's additive cell state ``c`` carries it; the Elman RNN's
``h`` is squashed and rewritten every step, so its gradient vanishes and it stays near the baseline.
Both models have the same hidden size and the same training budget.

Run: python examples/long_memory.py --out runs/long_memory    (full run)
     python examples/long_memory.py --quick                   (CI-sized)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax as rx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

BASELINE_MSE = 2.0 / 12.0


def adding_batch(key: jax.Array, batch: int, T: int) -> tuple[jax.Array, jax.Array]:
    """``xs (batch, T, 2)`` (value, marker) and targets ``(batch,)``."""
    k_u, k_a, k_b = jax.random.split(key, 3)
    values = jax.random.uniform(k_u, (batch, T))
    first = jax.random.randint(k_a, (batch,), 0, T // 2)
    second = jax.random.randint(k_b, (batch,), T // 2, T)
    markers = jax.nn.one_hot(first, T) + jax.nn.one_hot(second, T)
    return jnp.stack([values, markers], axis=-1), (values * markers).sum(-1)


def train(cell: rx.Cell, args, key: jax.Array, name: str) -> dict:
    """Trains ``cell`` + a linear read-out of its final ``h`` with Adam; returns its history and test MSE."""
    return fit(cell, args, key, name)[1]


def fit(cell: rx.Cell | rx.Layer, args, key: jax.Array, name: str, *, tag: str = "long_memory") -> tuple[dict, dict]:
    """:func:`train`, also returning the trained params ``{"cell": ..., "head": {"w", "b"}}``; ``cell`` may be a
    ``stacked`` layer too (trained layer by layer over the sequence, read out from its last layer's ``h``)."""
    k_cell, k_head, k_test, key = jax.random.split(key, 4)
    params = {
        "cell": cell.init(k_cell, 2),
        "head": {"w": 0.1 * jax.random.normal(k_head, (args.hidden,)), "b": jnp.ones(())},
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    opt_state = tx.init(params)

    def predict(params, xs):
        final, _ = rx.scan(cell, params["cell"], xs)
        return rx.as_cell(cell).output(final) @ params["head"]["w"] + params["head"]["b"]

    def loss_fn(params, xs, ys):
        return jnp.mean((predict(params, xs) - ys) ** 2)

    @jax.jit
    def train_step(params, opt_state, key):
        xs, ys = adding_batch(key, args.batch, args.T)
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, ys)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    test_xs, test_ys = adding_batch(k_test, 500 if args.quick else 2000, args.T)
    test_mse = jax.jit(lambda params: loss_fn(params, test_xs, test_ys))
    progress = _common.Progress(f"{tag}/{name}", args.steps, args.epochs)
    history, recent = [], []
    for step, k in enumerate(jax.random.split(key, args.steps), start=1):
        params, opt_state, loss = train_step(params, opt_state, k)
        recent.append(float(loss))
        if progress.epoch_ends(step):
            mse = float(test_mse(params))
            history.append({"step": step, "train_mse": float(np.mean(recent)), "test_mse": mse})
            progress.line(step, train_mse=history[-1]["train_mse"], test_mse=mse, baseline=BASELINE_MSE)
            recent = []
    return params, {
        "first_train_mse": history[0]["train_mse"],
        "final_test_mse": history[-1]["test_mse"],
        "history": history,
        "seconds": progress.elapsed(),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=2000, quick_steps=30, epochs=10)
    p.add_argument("--T", type=int, default=200, help="sequence length")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    args = _common.parse(p, argv)
    key_lstm, key_elman = jax.random.split(jax.random.key(args.seed))
    print(f"[long_memory] adding problem, T={args.T}: trivial MSE {BASELINE_MSE:.3f}")
    results = {
        "lstm": train(rx.lstm(args.hidden), args, key_lstm, "lstm"),
        "elman": train(rx.elman(args.hidden), args, key_elman, "elman"),
    }
    for name, r in results.items():
        print(f"[long_memory] {name}: test MSE {r['final_test_mse']:.4f} (baseline {BASELINE_MSE:.3f})")
    metrics = {"T": args.T, "baseline_mse": BASELINE_MSE, **results}
    return _common.write_metrics(args.out, "long_memory", metrics, args)


if __name__ == "__main__":
    main()
