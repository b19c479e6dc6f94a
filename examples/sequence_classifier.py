"""A bidirectional GRU classifier on variable-length sequences: is a string of brackets balanced?

Balance depends on order, not only on counts: half of the unbalanced strings have as many ``(``
as ``)`` and differ from a balanced string by one swapped pair, so a bag-of-symbols model cannot
beat about 75% accuracy. Sequences are right-padded and the model is given their ``lengths``: the
forward GRU's final state is taken at each sequence's last valid symbol and the backward GRU
starts there, so padding never leaks in.

Run: python examples/sequence_classifier.py --out runs/sequence_classifier    (full run)
     python examples/sequence_classifier.py --quick                           (CI-sized)
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

import recurrax as rx
from recurrax.flax.linen import RNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

KINDS = ("balanced", "swapped", "flipped")  # label 1, 0 (same counts), 0 (counts differ)


def balanced(rng: np.random.Generator, pairs: int) -> np.ndarray:
    """A random balanced string of ``pairs`` pairs as 0 = ``(`` and 1 = ``)``."""
    out, depth, opened = [], 0, 0
    for _ in range(2 * pairs):
        can_open, can_close = opened < pairs, depth > 0
        if can_open and (not can_close or rng.random() < 0.5):
            out.append(0)
            depth, opened = depth + 1, opened + 1
        else:
            out.append(1)
            depth -= 1
    return np.array(out, np.int32)


def is_balanced(s: np.ndarray) -> bool:
    depth = np.cumsum(np.where(s == 0, 1, -1))
    return bool(depth.min() >= 0 and depth[-1] == 0)


def make_dataset(rng: np.random.Generator, n: int, max_pairs: int, min_pairs: int = 1, exclude=frozenset()):
    """``(xs (n, 2*max_pairs, 2) one-hot, lengths (n,), labels (n,), kinds (n,))``; half balanced.

    Each string has ``min_pairs..max_pairs`` pairs before its corruption; strings in ``exclude``
    (as :func:`key` gives them) are drawn again, so a test set can hold only unseen strings.
    """
    xs = np.zeros((n, 2 * max_pairs, 2), np.float32)
    lengths, labels, kinds = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32)
    i = 0
    while i < n:
        s = balanced(rng, int(rng.integers(min_pairs, max_pairs + 1)))
        kind = 0 if rng.random() < 0.5 else int(rng.integers(1, 3))
        if kind == 1:  # swap two different symbols until the string breaks: same counts, wrong order
            while is_balanced(s):
                a, b = rng.choice(len(s), 2, replace=False)
                s[a], s[b] = s[b], s[a]
        elif kind == 2:  # flip one symbol: the counts differ
            j = int(rng.integers(len(s)))
            s[j] = 1 - s[j]
        if key(s) in exclude:
            continue
        xs[i, np.arange(len(s)), s] = 1.0
        lengths[i], labels[i], kinds[i] = len(s), int(is_balanced(s)), kind
        i += 1
    return xs, lengths, labels, kinds


def key(s: np.ndarray) -> bytes:
    """A hashable form of a string of brackets."""
    return s.astype(np.int8).tobytes()


def keys(data) -> set[bytes]:
    xs, lengths = data[:2]
    return {key(x[:n].argmax(-1)) for x, n in zip(xs, lengths)}


class Classifier(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, xs, lengths):
        layer = rx.bidirectional(rx.gru(self.hidden), rx.gru(self.hidden))
        final, _ = RNN(layer, return_state=True)(xs, lengths=lengths)
        features = jnp.concatenate([final.forward.h, final.backward.h], axis=-1)
        return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(features)))[..., 0]


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=1500, quick_steps=30, epochs=10)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--max-pairs", type=int, default=12, help="longest string: 2 * max_pairs symbols")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = _common.parse(p, argv)
    rng = np.random.default_rng(args.seed)
    train = make_dataset(rng, 400 if args.quick else 8000, args.max_pairs)
    test = make_dataset(rng, 200 if args.quick else 2000, args.max_pairs, exclude=keys(train))
    # Longer than anything seen in training: does the model count, or memorise lengths?
    longer = make_dataset(rng, 200 if args.quick else 2000, 2 * args.max_pairs, min_pairs=args.max_pairs + 1)
    print(
        f"[sequence_classifier] {len(train[0])} training / {len(test[0])} test strings of 2..{2 * args.max_pairs} "
        f"brackets, {train[2].mean():.0%} balanced "
        f"(test strings never occur in training)"
    )

    model = Classifier(args.hidden)
    params = model.init(jax.random.key(args.seed), jnp.asarray(train[0][:2]), jnp.asarray(train[1][:2]))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1))
    opt_state = tx.init(params)

    def loss_fn(params, xs, lengths, labels):
        logits = model.apply({"params": params}, xs, lengths)
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

    @jax.jit
    def train_step(params, opt_state, xs, lengths, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, lengths, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    predict = jax.jit(lambda params, xs, lengths: model.apply({"params": params}, xs, lengths) > 0)

    def accuracy(params, data):
        xs, lengths, labels, kinds = data
        correct = np.asarray(predict(params, jnp.asarray(xs), jnp.asarray(lengths))) == labels.astype(bool)
        return float(correct.mean()), {k: float(correct[kinds == i].mean()) for i, k in enumerate(KINDS)}

    progress = _common.Progress("sequence_classifier", args.steps, args.epochs)
    history, recent = [], []
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(train[0]), args.batch)
        xs, lengths, labels = (jnp.asarray(a[idx]) for a in train[:3])
        params, opt_state, loss = train_step(params, opt_state, xs, lengths, labels.astype(jnp.float32))
        recent.append(float(loss))
        if step == 1:
            first_loss = recent[0]
        if progress.epoch_ends(step):
            acc, _ = accuracy(params, test)
            history.append({"step": step, "train_loss": float(np.mean(recent)), "test_accuracy": acc})
            progress.line(step, train_loss=history[-1]["train_loss"], test_accuracy=acc)
            recent = []

    acc, by_kind = accuracy(params, test)
    longer_acc, longer_by_kind = accuracy(params, longer)
    print(f"[sequence_classifier] test accuracy {acc:.3f}; by kind: {_fmt(by_kind)}")
    print(
        f"[sequence_classifier] on longer strings ({2 * args.max_pairs + 2}..{4 * args.max_pairs} brackets, "
        f"never seen in training): {longer_acc:.3f}; by kind: {_fmt(longer_by_kind)}"
    )
    metrics = {
        "first_train_loss": first_loss,
        "final_train_loss": history[-1]["train_loss"],
        "test_accuracy": acc,
        "test_accuracy_by_kind": by_kind,
        "longer_test_accuracy": longer_acc,
        "longer_test_accuracy_by_kind": longer_by_kind,
        "history": history,
        "seconds": progress.elapsed(),
    }
    return _common.write_metrics(args.out, "sequence_classifier", metrics, args)


def _fmt(by_kind: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in by_kind.items())


if __name__ == "__main__":
    main()
