"""The one-command GPU check: ``python -m benchmarks.gpu_check`` on a machine with a GPU.

It names the device, runs the backend conformance suite on it (``tests/backends``, where ``cudnn_lstm`` runs and
the CPU kernels skip themselves), then ``python -m benchmarks --suite gpu`` with the time that is left, and writes
one summary with the device named (``<out>/gpu_check.md``, beside the suite's ``gpu.json`` and ``RESULTS.md``
section) to copy into ``benchmarks/RESULTS.md``. Everything runs within ``--minutes`` (default 8: an accelerator
lent for a few minutes must not be spent waiting): the tests get at most ``--test-share`` of it, the benchmark what
is left, each stopped at its limit with what it had done reported. Without a GPU it says so and exits with status
2, having run nothing (``--dry-run`` prints the commands instead).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_devices() -> list[str]:
    """The GPUs JAX sees, as text (empty without one)."""
    import jax

    try:
        return [str(d) for d in jax.devices("gpu")]
    except RuntimeError:
        return []


def commands(workers: int, out: Path) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of each part, in order."""
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "tests/backends"]
    if workers > 1 and importlib.util.find_spec("xdist") is not None:
        tests += ["-n", str(workers), "--dist", "loadgroup"]
    # 1 s of timed runs per case and mode (never under 10 runs): the 20 DeepBench cases fit the time left.
    bench = [sys.executable, "-m", "benchmarks", "--suite", "gpu", "--modes", "fwd,fwd+bwd", "--budget", "1"]
    bench += ["--no-plot", "--out", str(out), "--results-md", str(out / "RESULTS.md")]
    return [("conformance tests", tests), ("gpu suite", bench)]


def _run(name: str, argv: list[str], seconds: float, env: dict[str, str]) -> str:
    """The part's report: how it ended, after how long, and the end of what it printed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds, check=False)
        out, status = done.stdout + done.stderr, f"exit {done.returncode}"
    except subprocess.TimeoutExpired as stopped:
        # What it printed before it was stopped (bytes here whatever ``text`` says).
        text = lambda b: b if isinstance(b, str) else (b or b"").decode(errors="replace")  # noqa: E731
        out = text(stopped.stdout) + text(stopped.stderr)
        status = f"stopped at its limit of {seconds:.0f} s"
    tail = "\n".join(out.strip().splitlines()[-15:])
    return f"### {name}: {status} after {time.perf_counter() - start:.0f} s\n\n```text\n{tail}\n```\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock limit of the whole check (default 8)")
    p.add_argument("--test-share", type=float, default=0.5, help="fraction of it for the tests (default 0.5)")
    p.add_argument("--workers", type=int, default=8, help="pytest-xdist workers sharing the GPU (default 8)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu-check", help="results folder")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if not 0.0 < args.test_share < 1.0 or args.minutes <= 0:
        p.error(f"--minutes must be > 0 and --test-share in (0, 1), got {args.minutes} and {args.test_share}")
    parts = commands(args.workers, args.out)
    if args.dry_run:
        for name, cmd in parts:
            print(f"{name}: {' '.join(cmd)}")
        return 0
    import jax

    devices = _gpu_devices()
    if not devices:
        print(f"gpu_check: JAX sees no GPU here (default backend {jax.default_backend()!r}); nothing was run.")
        return 2
    # Several test processes share one GPU: none may take most of its memory up front.
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")

    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + 60.0 * args.minutes
    lines = [f"## GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n"]
    lines.append(f"Devices: {', '.join(devices)}; jax {jax.__version__}.\n")
    limits = (60.0 * args.minutes * args.test_share, None)  # None: what is left
    for (name, cmd), limit in zip(parts, limits):
        left = deadline - time.perf_counter()
        report = _run(name, cmd, left if limit is None else min(limit, left), env)
        lines += [f"Command: `{' '.join(cmd[1:])}`\n", report]
        print("\n".join(lines[-2:]), flush=True)
    (args.out / "gpu_check.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
