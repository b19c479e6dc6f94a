"""A character-level language model: embedding -> recurrax LSTM (in a Flax linen model) -> dense.

The text is English that every Python install carries: the documentation strings of standard-library
modules, collected at run time (no download). The model is trained with optax on random windows
(truncated backpropagation through time) and reports train and validation bits per character next
to the unigram entropy of the same text, the cost of a model that ignores context. It ends by
sampling text with the trained weights driven by ``cell.step`` directly: the Flax params *are*
recurrax params.

Run: python examples/char_lm.py --out runs/char_lm          (full run)
     python examples/char_lm.py --quick                     (CI-sized)
"""

from __future__ import annotations

import importlib
import inspect
import math
import string
import sys
import warnings
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

MODULES = (
    "argparse",
    "asyncio",
    "calendar",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "zipfile",
)
ALPHABET = set(string.printable) - set("\t\r\x0b\x0c")


def stdlib_text(modules: Sequence[str] = MODULES) -> str:
    """Docstrings of ``modules`` and of their public classes, functions and methods, in a fixed order."""
    docs: list[str] = []
    with warnings.catch_warnings():  # typing.io and friends warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            _collect(importlib.import_module(name), docs)
    text = "\n\n".join(docs).replace("\t", "    ")
    return "".join(ch for ch in text if ch in ALPHABET)


def _collect(module, docs: list[str]) -> None:
    """Appends the docstrings of ``module`` and its public members (repeats skipped) to ``docs``."""
    objects = [module]
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        objects.append(obj)
        if inspect.isclass(obj):
            objects.extend(v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and callable(v))
    for obj in objects:
        doc = inspect.getdoc(obj)
        if doc and doc not in docs[-50:]:
            docs.append(doc)


def unigram_entropy(ids: np.ndarray, vocab: int) -> float:
    """Entropy in bits per character of the character frequencies of ``ids``."""
    p = np.bincount(ids, minlength=vocab) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


class CharLM(nn.Module):
    """``ids (B, T) -> logits (B, T, V)``; ``__call__`` can also return the LSTM's final state."""

    vocab: int
    hidden: int
    embed: int = 32

    @nn.compact
    def __call__(self, ids):
        xs = nn.Embed(self.vocab, self.embed, name="embed")(ids)
        ys = RNN(rx.lstm(self.hidden), name="rnn")(xs)
        return nn.Dense(self.vocab, name="head")(ys)


def sample(cell, params, prompt_ids, num_chars, key, temperature=0.8):
    """Samples ``num_chars`` ids after ``prompt_ids``, stepping the LSTM with ``cell.step`` (jit-able)."""
    embedding = params["embed"]["embedding"]
    head, cell_params = params["head"], params["rnn"]["cell"]
    # Read the prompt but its last character, which the first sampling step consumes.
    state = cell.initial_state(cell_params, ())
    if len(prompt_ids) > 1:
        state, _ = rx.scan(cell, cell_params, embedding[prompt_ids[:-1]], state)

    def body(carry, k):
        state, token = carry
        state = cell.step(cell_params, state, embedding[token])
        logits = cell.output(state) @ head["kernel"] + head["bias"]
        token = jax.random.categorical(k, logits / temperature)
        return (state, token), token

    _, tokens = jax.lax.scan(body, (state, prompt_ids[-1]), jax.random.split(key, num_chars))
    return tokens


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=1200, quick_steps=30, epochs=10)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = _common.parse(p, argv)
    if args.quick:
        args.hidden, args.seq_len = min(args.hidden, 64), min(args.seq_len, 32)

    text = stdlib_text()
    chars = sorted(set(text))
    vocab = len(chars)
    ids = _encode(text, chars)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    entropy = unigram_entropy(ids, vocab)
    print(
        f"[char_lm] {len(text):,} characters of standard-library docstrings, {vocab} symbols, "
        f"unigram entropy {entropy:.3f} bits/char"
    )

    model = CharLM(vocab, args.hidden)
    key = jax.random.key(args.seed)
    key, k_init = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1, args.seq_len), jnp.int32))["params"]
    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = tx.init(params)
    bits = 1.0 / math.log(2.0)

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean() * bits

    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(loss_fn)
    rng = np.random.default_rng(args.seed)

    def windows(source, n):
        starts = rng.integers(0, len(source) - args.seq_len - 1, n)
        return jnp.asarray(np.stack([source[s : s + args.seq_len + 1] for s in starts]))

    val_batches = [windows(val_ids, args.batch) for _ in range(2 if args.quick else 8)]
    progress = _common.Progress("char_lm", args.steps, args.epochs)
    history, recent = [], []
    for step in range(1, args.steps + 1):
        params, opt_state, loss = train_step(params, opt_state, windows(train_ids, args.batch))
        recent.append(float(loss))
        if step == 1:
            first_bpc = recent[0]
        if progress.epoch_ends(step):
            val = float(np.mean([eval_loss(params, b) for b in val_batches]))
            history.append({"step": step, "train_bpc": float(np.mean(recent)), "val_bpc": val})
            progress.line(step, train_bpc=history[-1]["train_bpc"], val_bpc=val, unigram=entropy)
            recent = []

    prompt = "Return the "
    tokens = sample(rx.lstm(args.hidden), params, _encode(prompt, chars), 300 if not args.quick else 40, key)
    sampled = prompt + "".join(chars[int(t)] for t in tokens)
    print(f"[char_lm] sample:\n{sampled}\n")
    metrics = {
        "characters": len(text),
        "vocab": vocab,
        "unigram_entropy_bpc": entropy,
        "first_train_bpc": first_bpc,
        "final_train_bpc": history[-1]["train_bpc"],
        "final_val_bpc": history[-1]["val_bpc"],
        "history": history,
        "sample": sampled,
        "seconds": progress.elapsed(),
    }
    return _common.write_metrics(args.out, "char_lm", metrics, args)


def _encode(text: str, chars: Sequence[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(chars)}
    return np.array([lookup[c] for c in text], np.int32)


if __name__ == "__main__":
    main()
