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
from benchmarks.timing import Stats, measure_interleaved


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

    The implementations of one case and mode are built together and timed in interleaved rounds
    (:func:`benchmarks.timing.measure_interleaved`), so their ratios are taken under the same machine
    conditions; ``budget_s`` caps the seconds of one implementation's timed runs.

    A failing implementation is recorded with ``status="failed"`` and its error, and the run goes on;
    a missing package gives ``status="missing"``, a GPU-only peer off GPU ``status="skipped"``.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    groups = [(c, m, [i for i in impls if i.unavailable(c, m) != "n/a"]) for c in cases for m in modes]
    total = sum(len(group) for *_, group in groups)
    records, start, k = [], time.perf_counter(), 0
    for case, mode, group in groups:
        built: dict[str, Any] = {}
        for impl in group:
            reason = impl.unavailable(case, mode)
            built[impl.name] = _build(case, mode, impl) if reason is None else reason
        prepared = {name: p for name, p in built.items() if not isinstance(p, (str, Exception))}
        stats = measure_interleaved(
            {name: p.run for name, p in prepared.items()}, repeats=repeats, warmup=warmup, budget_s=budget_s
        )
        for impl in group:
            k += 1
            outcome = stats.get(impl.name, built[impl.name])
            record = {"cell": case.cell, "size": case.size.label, "mode": mode, "impl": impl.name}
            if isinstance(outcome, str):
                record.update(status=outcome.split(":")[0], error=outcome)
            elif isinstance(outcome, Exception):
                record.update(_failure(outcome))
            else:
                record.update(_record(case, mode, prepared[impl.name], outcome))
            clock = _clock(time.perf_counter() - start)
            log(f"[{k:>3}/{total} {clock}] {case.label:<24} {mode:<8} {impl.name:<30} {_summary(record)}")
            records.append(record)
        del built, prepared
        gc.collect()
    log(f"done: {total} measurements in {_clock(time.perf_counter() - start)}")
    return records


def _build(case: Case, mode: str, impl: Impl) -> Any:
    try:
        return impl.build(case, mode)
    except Exception as err:  # a failing peer is reported, and the run goes on
        return err


def _failure(err: Exception) -> dict[str, Any]:
    last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" (at {last.filename}:{last.lineno})" if last else ""
    return {"status": "failed", "error": f"{type(err).__name__}: {err}{where}"}


def _record(case: Case, mode: str, prepared: Any, stats: Stats) -> dict[str, Any]:
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
    if record["status"] == "failed":
        return f"FAILED {record['error'][:160]}"
    if record["status"] != "ok":
        return record["error"]
    text = (
        f"{record['median_s'] * 1e3:9.3f} ms ±{(record['q3_s'] - record['q1_s']) / 2 * 1e3:.3f} (n={record['repeats']})"
    )
    if record["compile_s"] is not None:
        text += f"  compile {record['compile_s']:.2f} s"
    return text


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):d}:{int(seconds % 60):02d}"
