"""Linear-recurrence cells on every backend of ``recurrax.scan`` beside the sequential LSTM and GRU.

Run: ``python -m benchmarks.linear`` (the issue's matrix: B=8, H=I=256, T in 512, 4096, 16384, forward
and forward+backward); ``--quick`` for a tiny smoke run; ``--chunks 16,64,256`` adds the chunked backend
at those chunk sizes (how ``recurrax.linear_scan.choose`` was set); ``--gpu-paper`` adds the minGRU
paper's comparison (B=64, T in 512, 4096). Prints a Markdown table with the median time, the ratio to
the sequential LSTM of the same size and mode, and the load average while it ran (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

import recurrax as rx
from benchmarks import environment, timing
from recurrax import linear_scan
from recurrax.cells.linear import lru, min_gru, min_lstm

LINEAR_CELLS: dict[str, Callable[[int], rx.Cell]] = {
    "min_gru": min_gru,
    "min_gru_lin": lambda h: min_gru(h, log_space=False),
    "min_lstm": min_lstm,
    "lru": lambda h: lru(h, h),
}
"""``min_gru_lin`` is minGRU with its parallel scan on ``(a, b)`` rather than on their logarithms."""
PEERS: dict[str, Callable[[int], rx.Cell]] = {"lstm": rx.lstm, "gru": rx.gru}
BACKENDS = ("sequential", "associative", "chunked", "auto")


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement: ``cell`` run with ``backend`` at batch ``B``, steps ``T``, hidden ``H`` in ``mode``."""

    cell: str
    backend: str
    batch: int
    steps: int
    hidden: int
    mode: str
    median_s: float
    min_s: float
    spread: float
    compile_s: float
    load: tuple[float, ...] | None


def _forward(cell: rx.Cell, backend: str, chunk: int | None) -> Callable:
    """``(params, xs) -> sum of outputs``; ``chunk`` runs the chunked backend at that chunk size."""

    def fwd(params, xs):
        if chunk is None:
            return rx.scan(cell, params, xs, backend=backend)[1].sum()
        zs = cell.project(params, jnp.moveaxis(xs, 1, 0))
        s0 = cell.initial_state(params, xs.shape[:1])
        return cell.output(linear_scan.states(cell, params, zs, s0, "chunked", chunk_size=chunk)).sum()

    return fwd


def measure(
    cell_name: str, backend: str, batch: int, steps: int, hidden: int, mode: str, *, repeats: int, warmup: int
) -> Row:
    """Times one configuration (``backend`` may be ``"chunked/<size>"``)."""
    factory = LINEAR_CELLS.get(cell_name) or PEERS[cell_name]
    cell = factory(hidden)
    name, _, chunk = backend.partition("/")
    kx, kp = jax.random.split(jax.random.PRNGKey(0))
    xs = jax.random.normal(kx, (batch, steps, hidden), jnp.float32)
    params = cell.init(kp, hidden)
    fn = _forward(cell, name, int(chunk) if chunk else None)
    if mode == "fwd+bwd":
        fn = jax.grad(fn, argnums=(0, 1))
    compiled, compile_s, _ = timing.compile_jax(fn, params, xs)
    stats = timing.measure(lambda: jax.block_until_ready(compiled(params, xs)), repeats=repeats, warmup=warmup)
    load = environment.load_average()
    return Row(
        cell_name,
        backend,
        batch,
        steps,
        hidden,
        mode,
        stats.median,
        stats.min,
        stats.spread,
        compile_s,
        load and tuple(load),
    )


def run(
    *,
    cells: Sequence[str] = ("min_gru",),
    peers: Sequence[str] = ("lstm", "gru"),
    batch: int = 8,
    hidden: int = 256,
    steps: Sequence[int] = (512, 4096, 16384),
    modes: Sequence[str] = ("fwd", "fwd+bwd"),
    chunks: Sequence[int] = (),
    repeats: int = 5,
    warmup: int = 1,
    report: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every linear cell on every backend (plus ``chunked/<c>`` per chunk size) and the sequential peers."""
    backends = (*BACKENDS, *(f"chunked/{c}" for c in chunks))
    rows = []
    for t in steps:
        for mode in modes:
            jobs = [(c, b) for c in cells for b in backends] + [(p, "sequential") for p in peers]
            for cell_name, backend in jobs:
                row = measure(cell_name, backend, batch, t, hidden, mode, repeats=repeats, warmup=warmup)
                rows.append(row)
                if report:
                    report(row)
    return rows


def table_line(row: Row, rows: Sequence[Row]) -> str:
    """A Markdown row: the time, its ratio to the LSTM and to the best backend of the same cell, in the same run.

    Ratios use the minimum over the timed runs: on a shared machine other work only ever adds time.
    """
    same = [r for r in rows if (r.steps, r.mode, r.batch) == (row.steps, row.mode, row.batch)]
    lstm = next((r.min_s for r in same if r.cell == "lstm"), None)
    best = min((r.min_s for r in same if r.cell == row.cell), default=row.min_s)
    vs_lstm = f"{lstm / row.min_s:.2f}x" if lstm else "-"
    load = "/".join(f"{x:.1f}" for x in row.load) if row.load else "-"
    return (
        f"| {row.cell} | {row.backend} | {row.batch} | {row.steps} | {row.hidden} | {row.mode} | "
        f"{row.median_s * 1e3:.2f} | {row.min_s * 1e3:.2f} | ±{row.spread * 100:.0f}% | {vs_lstm} | "
        f"{row.min_s / best:.2f} | {row.compile_s:.1f} | {load} |"
    )


HEADER = (
    "| cell | backend | B | T | H | mode | median ms | min ms | spread | LSTM time / this | this / best of cell | "
    "compile s | load 1/5/15 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.linear", description=__doc__)
    p.add_argument("--cells", default="min_gru", help=f"comma-separated subset of {', '.join(LINEAR_CELLS)}")
    p.add_argument("--peers", default="lstm,gru", help="sequential peers (comma-separated; empty for none)")
    p.add_argument("--steps", default="512,4096,16384", help="sequence lengths T")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--chunks", default="", help="extra chunk sizes for the chunked backend")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gpu-paper", action="store_true", help="also B=64, T in 512, 4096 (the minGRU paper's)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    args = p.parse_args(argv)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    def names(text: str) -> list[str]:
        return [x for x in text.split(",") if x]

    settings = dict(
        cells=names(args.cells),
        peers=names(args.peers),
        batch=args.batch,
        hidden=args.hidden,
        steps=ints(args.steps),
        modes=names(args.modes),
        chunks=ints(args.chunks),
        repeats=args.repeats,
        warmup=args.warmup,
    )
    if args.quick:
        settings.update(batch=2, hidden=8, steps=[16], chunks=[4], repeats=1, warmup=0)
    print(f"# {jax.default_backend()} {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"# auto on this device: {[(t, linear_scan.choose(t)) for t in settings['steps']]}")

    def report(row: Row) -> None:
        print(
            f"# {row.cell} {row.backend} B={row.batch} T={row.steps} {row.mode}: {row.median_s * 1e3:.2f} ms",
            flush=True,
        )

    rows = run(**settings, report=report)
    if args.gpu_paper and not args.quick:
        rows += run(**{**settings, "batch": 64, "steps": [512, 4096]}, report=report)
    print(HEADER)
    for row in rows:
        print(table_line(row, rows))
    return rows


if __name__ == "__main__":
    main()
