"""ConvLSTM: recurrax's ``conv_lstm`` beside Flax linen's ``ConvLSTMCell`` (``nn.RNN``) and Keras 3's
``ConvLSTM2D`` (JAX backend), forward and forward+backward, timed in interleaved rounds in one process.

Run: ``python -m benchmarks.conv`` (the issue's case: B=8, T=10, 32x32 maps, 16 input and 16 output channels,
3x3 kernels, CPU); ``--quick`` for a tiny smoke run. ``fwd+bwd`` is the gradient of ``sum(outputs)`` with
respect to the params and the inputs (a training step without the optimizer). Prints a Markdown table with the
median and minimum time, the ratio of each peer's minimum to recurrax's, and the load average (the CPU may be
shared). Every implementation is compiled ahead of time, so compile time is reported apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import environment, timing

SEED = 0
MODES = ("fwd", "fwd+bwd")


@dataclasses.dataclass(frozen=True)
class Size:
    """Batch ``B``, steps ``T``, square maps ``S x S``, input channels ``C``, features ``F``, kernel ``K x K``."""

    batch: int = 8
    steps: int = 10
    side: int = 32
    channels: int = 16
    features: int = 16
    kernel: int = 3

    @property
    def label(self) -> str:
        s = self
        return f"b{s.batch}-t{s.steps}-{s.side}x{s.side}-c{s.channels}-f{s.features}-k{s.kernel}"


def _inputs(size: Size) -> jax.Array:
    """Batch-major ``(B, T, S, S, C)``, the layout Flax's ``nn.RNN`` and Keras take."""
    return jax.random.normal(jax.random.key(SEED + 1), (size.batch, size.steps, size.side, size.side, size.channels))


def _recurrax(size: Size) -> tuple[Callable, Any]:
    import recurrax as rx

    cell = rx.conv_lstm(size.features, kernel_size=(size.kernel, size.kernel))
    params = cell.init(jax.random.key(SEED), size.channels)

    def apply(p, xs):
        # recurrax runs conv cells time-major; the transposes are part of what a batch-major user pays.
        return jnp.moveaxis(rx.scan(cell, p, jnp.moveaxis(xs, 1, 0), time_major=True)[1], 0, 1)

    return apply, params


def _flax(size: Size) -> tuple[Callable, Any]:
    import flax.linen as nn

    net = nn.RNN(nn.ConvLSTMCell(size.features, kernel_size=(size.kernel, size.kernel)))
    return net.apply, net.init(jax.random.key(SEED), _inputs(size))


def _keras(size: Size) -> tuple[Callable, Any]:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs the {keras.backend.backend()!r} backend here, not 'jax'")
    layer = keras.layers.ConvLSTM2D(size.features, size.kernel, padding="same", return_sequences=True)
    layer(_inputs(size)[:1])
    frozen = [v.value for v in layer.non_trainable_variables]

    def apply(trainable, xs):
        return layer.stateless_call(trainable, frozen, xs)[0]

    return apply, [v.value for v in layer.trainable_variables]


IMPLEMENTATIONS: dict[str, tuple[str, Callable[[Size], tuple[Callable, Any]]]] = {
    "recurrax conv_lstm": ("recurrax", _recurrax),
    "flax.linen ConvLSTMCell": ("flax", _flax),
    "keras ConvLSTM2D": ("keras", _keras),
}
"""Display name: (package it needs, builder returning ``(apply(params, xs) -> ys, params)``)."""
REFERENCE = "recurrax conv_lstm"


def _prepared(build: Callable[[Size], tuple[Callable, Any]], size: Size, mode: str) -> tuple[Callable, float]:
    apply, params = build(size)
    xs = _inputs(size)
    fn = apply if mode == "fwd" else jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1))
    compiled, seconds, _ = timing.compile_jax(fn, params, xs)
    return (lambda: jax.block_until_ready(compiled(params, xs))), seconds


def run(
    size: Size, *, modes: Sequence[str] = MODES, names: Sequence[str] | None = None, repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """One record per implementation and mode: its median and minimum seconds, compile seconds, or why not."""
    records = []
    for mode in modes:
        runs, compile_s, status = {}, {}, {}
        for name in names or IMPLEMENTATIONS:
            package, build = IMPLEMENTATIONS[name]
            if importlib.util.find_spec(package) is None:
                status[name] = f"missing: package {package!r} is not installed"
                continue
            try:
                runs[name], compile_s[name] = _prepared(build, size, mode)
            except Exception as err:  # a failing peer is reported, and the run goes on
                status[name] = f"failed: {type(err).__name__}: {err}"
        stats = timing.measure_interleaved(runs, repeats=repeats, warmup=warmup)
        for name in names or IMPLEMENTATIONS:
            record = {"impl": name, "mode": mode, "size": size.label}
            result = stats.get(name, status.get(name))
            if isinstance(result, timing.Stats):
                record.update(median_s=result.median, min_s=result.min, compile_s=compile_s[name])
            else:
                record.update(status=str(result))
            records.append(record)
    return records


def table(records: Sequence[dict[str, Any]]) -> str:
    """A Markdown table; ``peer / recurrax`` is the ratio of minimum times within one mode."""
    lines = [
        "| implementation | mode | size | median ms | min ms | peer / recurrax | compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "min_s" not in r:
            lines.append(f"| {r['impl']} | {r['mode']} | {r['size']} | {r['status']} | | | |")
            continue
        ref = next((x for x in records if x["impl"] == REFERENCE and x["mode"] == r["mode"] and "min_s" in x), None)
        ratio = f"{r['min_s'] / ref['min_s']:.2f}" if ref else "-"
        lines.append(
            f"| {r['impl']} | {r['mode']} | {r['size']} | {r['median_s'] * 1e3:.2f} | {r['min_s'] * 1e3:.2f} | "
            f"{ratio} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv", description=__doc__)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of fwd, fwd+bwd")
    p.add_argument("--peer", action="append", dest="peers", help=f"only this one (repeatable): {list(IMPLEMENTATIONS)}")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES] + [n for n in args.peers or [] if n not in IMPLEMENTATIONS]
    if unknown:
        p.error(f"unknown mode or peer {unknown}; modes: {list(MODES)}, peers: {list(IMPLEMENTATIONS)}")
    size, repeats, warmup = Size(), args.repeats, args.warmup
    if args.quick:
        size, repeats, warmup = Size(batch=2, steps=3, side=6, channels=2, features=3), 1, 0
    print(f"# {jax.default_backend()} {jax.devices()[0].device_kind}, jax {jax.__version__}, {size.label}")
    records = run(size, modes=modes, names=args.peers, repeats=repeats, warmup=warmup)
    print(f"# load average 1/5/15: {environment.load_average()}")
    print(table(records))
    return records


if __name__ == "__main__":
    main()
