"""Small helpers the training examples share: command-line flags, progress lines, the metrics JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax


def parser(description: str, *, steps: int, quick_steps: int, epochs: int) -> argparse.ArgumentParser:
    """The flags every example takes: ``--out``, ``--steps``, ``--epochs``, ``--quick``, ``--seed``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=None, help="directory for metrics.json (and any artefacts)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps in all (default {steps})")
    p.add_argument("--epochs", type=int, default=epochs, help="progress lines, evenly spread over the steps")
    p.add_argument("--quick", action="store_true", help=f"CI-sized run: {quick_steps} steps, smaller evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(default_steps=steps, quick_steps=quick_steps)
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses ``argv`` and resolves ``--steps`` against ``--quick``."""
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = args.quick_steps if args.quick else args.default_steps
    args.epochs = max(1, min(args.epochs, args.steps))
    return args


class Progress:
    """Prints one line per epoch with the elapsed time and whatever metrics it is given."""

    def __init__(self, name: str, steps: int, epochs: int):
        self.name, self.steps, self.epochs = name, steps, epochs
        self.start = time.perf_counter()

    def epoch_ends(self, step: int) -> bool:
        """Whether ``step`` (1-based) closes an epoch."""
        return step == self.steps or step % max(1, self.steps // self.epochs) == 0

    def line(self, step: int, **metrics: float) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"[{self.name}] step {step:5d}/{self.steps}  {shown}  ({self.elapsed():.1f} s)", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def write_metrics(out: Path | None, name: str, metrics: dict[str, Any], args: Any) -> dict[str, Any]:
    """Adds the run's settings and machine to ``metrics`` and writes ``<out>/metrics.json`` when asked."""
    record = {
        "example": name,
        **metrics,
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("default_steps", "quick_steps")
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"[{name}] wrote {out / 'metrics.json'}")
    return record
