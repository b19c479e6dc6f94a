"""The Newton backend (``recurrax.backends.newton``) against ``sequential``: iterations and time, interleaved.

Run: ``python -m benchmarks.newton`` (the matrix of issue 16: GRU and LSTM, B=1, I=H in 16, 64, 256, T in 1k,
16k, 100k, forward and forward+backward); ``--quick`` for a smoke run; ``--gpu`` for the GPU case list (B=8,
sized to finish in under 8 minutes on one H100/H200). Weights are trained-like: the recurrent matrix is scaled
to a small norm (a predictable run, ``lambda_max < 0``), as Newton needs.

The method follows the memory the dense Jacobians take (``T * N^2`` floats): ``full`` (DEER) up to
``--dense-mb`` of them, else ``diagonal`` with Hutchinson probes (quasi-DEER; the exact diagonal costs ``N``
Jacobian-vector products per iteration, as much as the dense one). Prints a Markdown table: median seconds
of each backend (the two timed in alternation), the ratio, the Newton iterations and the final residual.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

import recurrax as rx
from benchmarks import environment, timing
from recurrax import backends
from recurrax.backends import nonlinear

MATRIX = dict(cells=("gru", "lstm"), hidden=(16, 64, 256), steps=(1_000, 16_384, 100_000), batch=1)
QUICK = dict(cells=("gru", "lstm"), hidden=(8,), steps=(256, 1_024), batch=1)
GPU = dict(cells=("gru", "lstm"), hidden=(16, 64, 256), steps=(1_000, 16_384, 100_000), batch=8)


@dataclasses.dataclass(frozen=True)
class Row:
    cell: str
    hidden: int
    steps: int
    batch: int
    mode: str
    method: str
    newton_s: float | None
    sequential_s: float | None
    iterations: int | None
    residual: float | None
    note: str = ""


def _method(cell: str, hidden: int, steps: int, batch: int, dense_mb: float) -> dict:
    n = 2 * hidden if cell == "lstm" else hidden
    if steps * batch * n * n * 4 <= dense_mb * 2**20:
        return dict(method="full")
    return dict(method="diagonal", diagonal="hutchinson", probes=2, key=jax.random.key(0))


def _problem(cell_name: str, hidden: int, steps: int, batch: int):
    cell = getattr(rx, cell_name)(hidden)
    params = cell.init(jax.random.key(0), hidden)
    params = dict(params, w_h=0.5 * params["w_h"] / jnp.linalg.norm(params["w_h"], 2))
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))
    return cell, params, xs


def measure(cell_name, hidden, steps, batch, mode, *, repeats, warmup, dense_mb) -> Row:
    cell, params, xs = _problem(cell_name, hidden, steps, batch)
    config = _method(cell_name, hidden, steps, batch, dense_mb)
    method = config["method"] + ("/hutchinson" if "diagonal" in config else "")
    newton = backends.newton(**config, on_failure="nan")

    def run(backend):
        def fwd(params, xs):
            return rx.scan(cell, params, xs, backend=backend)[1].sum()

        return fwd if mode == "fwd" else jax.grad(fwd)

    try:
        _, info = jax.jit(lambda p, x: nonlinear.solve(cell, p, x, **config))(params, xs)
        compiled = {
            name: timing.compile_jax(run(b), params, xs)[0] for name, b in (("newton", newton), ("seq", "sequential"))
        }
        stats = timing.measure_interleaved(
            {name: (lambda c=c: jax.block_until_ready(c(params, xs))) for name, c in compiled.items()},
            repeats=repeats,
            warmup=warmup,
        )
    except Exception as err:  # out of memory at the largest sizes: reported, not fatal
        return Row(cell_name, hidden, steps, batch, mode, method, None, None, None, None, type(err).__name__)
    return Row(
        cell_name,
        hidden,
        steps,
        batch,
        mode,
        method,
        stats["newton"].median,
        stats["seq"].median,
        int(info.iterations),
        float(info.residual),
        "" if bool(info.converged) else "not converged",
    )


HEADER = (
    "| cell | H | T | B | mode | method | newton s | sequential s | newton / sequential | iterations | residual | |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def line(row: Row) -> str:
    def s(x):
        return "-" if x is None else f"{x:.4g}"

    ratio = "-" if row.newton_s is None else f"{row.newton_s / row.sequential_s:.2f}"
    return (
        f"| {row.cell} | {row.hidden} | {row.steps} | {row.batch} | {row.mode} | {row.method} | {s(row.newton_s)} | "
        f"{s(row.sequential_s)} | {ratio} | {s(row.iterations)} | {s(row.residual)} | {row.note} |"
    )


def main(argv: Sequence[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.newton", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smoke run (H=8, T in 256, 1024)")
    p.add_argument("--gpu", action="store_true", help="the GPU case list (B=8)")
    p.add_argument("--modes", default="fwd,fwd+bwd", help="comma-separated subset of fwd, fwd+bwd")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dense-mb", type=float, default=512.0, help="largest dense Jacobians for method='full'")
    p.add_argument("--max-steps", type=int, default=None, help="skip cases with more steps than this")
    p.add_argument("--steps", help="comma-separated T values instead of the matrix's")
    p.add_argument("--hidden", help="comma-separated H values instead of the matrix's")
    p.add_argument("--cells", help="comma-separated subset of gru, lstm")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else GPU if args.gpu else MATRIX)
    for name, cast in (("steps", int), ("hidden", int), ("cells", str)):
        if getattr(args, name):
            settings[name] = tuple(cast(v) for v in getattr(args, name).split(","))
    modes = [m for m in args.modes.split(",") if m]
    cpu = environment.describe(None)["cpu"]
    print(f"# {jax.default_backend()} {jax.devices()[0].device_kind}, jax {jax.__version__}, {cpu}")
    print(HEADER, flush=True)
    rows = []
    for steps in settings["steps"]:
        if args.max_steps and steps > args.max_steps:
            continue
        for hidden in settings["hidden"]:
            for cell in settings["cells"]:
                for mode in modes:
                    row = measure(
                        cell,
                        hidden,
                        steps,
                        settings["batch"],
                        mode,
                        repeats=args.repeats,
                        warmup=args.warmup,
                        dense_mb=args.dense_mb,
                    )
                    rows.append(row)
                    print(line(row), flush=True)
    print(f"# load average at the end: {environment.load_average()}")
    return rows


if __name__ == "__main__":
    main()
