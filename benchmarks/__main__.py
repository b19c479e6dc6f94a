"""Command line: ``python -m benchmarks --suite cpu`` (see ``--help``)."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Sequence

from benchmarks import cases, environment, peers, report, runner

HERE = pathlib.Path(__file__).parent


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--suite", default="cpu", help=f"one of {', '.join(cases.SUITES)} (default cpu)")
    p.add_argument("--cells", type=_csv, help=f"comma-separated subset of {', '.join(cases.CELLS)}")
    p.add_argument("--cases", type=_csv, help="comma-separated size labels, e.g. b32-t128-i256-h256 (see --list)")
    p.add_argument("--modes", type=_csv, help=f"comma-separated subset of {', '.join(cases.MODES)}")
    p.add_argument("--peer", action="append", dest="peers", help="only this implementation (repeatable; see --list)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    p.add_argument(
        "--budget",
        type=float,
        default=4.0,
        help="seconds of timed runs per measurement; slow ones get fewer runs, never under 10 (0: always --repeats)",
    )
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results", help="folder for <suite>.json and <suite>.png")
    p.add_argument("--results-md", type=pathlib.Path, default=HERE / "RESULTS.md", help="Markdown file to update")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("--list", action="store_true", help="list suites, cells, sizes and implementations, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        for name, suite in cases.SUITES.items():
            print(f"suite {name}: " + ", ".join(c.label for c in suite))
        print("cells: " + ", ".join(cases.CELLS) + "; modes: " + ", ".join(cases.MODES))
        print("implementations: " + "; ".join(i.name for i in peers.IMPLEMENTATIONS))
        return 0
    if args.repeats < 1 or args.warmup < 0:
        p.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    try:
        selected, modes = cases.select(args.suite, cells=args.cells, sizes=args.cases, modes=args.modes)
        impls = peers.implementations(args.peers)
    except ValueError as err:
        p.error(str(err))
    import jax

    if args.suite == "gpu" and jax.default_backend() != "gpu":
        print(f"suite 'gpu' skipped: it needs a GPU, and the JAX backend here is {jax.default_backend()!r}.")
        return 0
    env = environment.describe(peers.torch_threads())
    print(
        f"recurrax benchmarks, suite {args.suite}: {len(selected)} cases x {len(modes)} modes, "
        f"{env['cpu']} ({env['cores']} cores), load {env['load_average']}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    records = runner.run(selected, modes, impls, repeats=args.repeats, warmup=args.warmup, budget_s=args.budget)
    payload = {
        "suite": args.suite,
        "command": " ".join(["python -m benchmarks", *argv]),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "budget_s": args.budget,
        "environment": env,
        "load_average_end": environment.load_average(),
        "wall_s": time.perf_counter() - start,
        "records": records,
    }
    report.write_json(args.out / f"{args.suite}.json", payload)
    report.splice(args.results_md, args.suite, report.markdown(payload))
    if not args.no_plot and report.plot(args.out / f"{args.suite}.png", payload):
        print(f"plot: {args.out / (args.suite + '.png')}", file=sys.stderr)
    print(f"results: {args.out / (args.suite + '.json')}, {args.results_md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
