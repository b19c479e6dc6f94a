"""The benchmark loop: every implementation on every case and mode, with a progress display."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.cases import Case
from benchmarks.peers import Impl
from benchmarks.timing import measure


def run(
    cases: Sequence[Case],
    modes: Sequence[str],
    impls: Sequence[Impl],
    *,
    repeats: int,
    warmup: int,
    budget_s: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measures each ``(case, mode, impl)``; returns one record per measurement or non-measurement.

    ``budget_s`` caps the seconds spent timing one measurement (see :func:`benchmarks.timing.measure`).

    A failing implementation is recorded with ``status="failed"`` and its error, and the run goes on;
    a missing package gives ``status="missing"``, a GPU-only peer off GPU ``status="skipped"``.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    tasks = [(c, m, i) for c in cases for m in modes for i in impls if i.unavailable(c, m) != "n/a"]
    records, start = [], time.perf_counter()
    for k, (case, mode, impl) in enumerate(tasks, 1):
        prefix = (
            f"[{k:>3}/{len(tasks)} {_clock(time.perf_counter() - start)}] {case.label:<24} {mode:<8} {impl.name:<30}"
        )
        record = {"cell": case.cell, "size": case.size.label, "mode": mode, "impl": impl.name}
        reason = impl.unavailable(case, mode)
        if reason is not None:
            record.update(status=reason.split(":")[0], error=reason)
            log(f"{prefix} {reason}")
        else:
            record.update(_measure(case, mode, impl, repeats, warmup, budget_s))
            log(f"{prefix} {_summary(record)}")
        records.append(record)
        gc.collect()
    log(f"done: {len(tasks)} measurements in {_clock(time.perf_counter() - start)}")
    return records


def _measure(case: Case, mode: str, impl: Impl, repeats: int, warmup: int, budget_s: float) -> dict[str, Any]:
    try:
        prepared = impl.build(case, mode)
        stats = measure(prepared.run, repeats=repeats, warmup=warmup, budget_s=budget_s)
    except Exception as err:  # a failing peer is reported, and the run goes on
        last = traceback.extract_tb(err.__traceback__)[-1]
        return {"status": "failed", "error": f"{type(err).__name__}: {err} (at {last.filename}:{last.lineno})"}
    return {
        "status": "ok",
        "median_s": stats.median,
        "q1_s": stats.q1,
        "q3_s": stats.q3,
        "min_s": stats.min,
        "max_s": stats.max,
        "repeats": stats.n,
        "compile_s": prepared.compile_s,
        "peak_bytes": prepared.peak_bytes,
        "peak_method": prepared.peak_method,
        "gflops": case.flops(mode) / stats.median / 1e9,
    }


def _summary(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"FAILED {record['error'][:160]}"
    text = (
        f"{record['median_s'] * 1e3:9.3f} ms ±{(record['q3_s'] - record['q1_s']) / 2 * 1e3:.3f} (n={record['repeats']})"
    )
    if record["compile_s"] is not None:
        text += f"  compile {record['compile_s']:.2f} s"
    return text


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):d}:{int(seconds % 60):02d}"
