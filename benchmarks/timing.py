"""How things are measured: wall-clock statistics, compile time, and peak memory."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Stats:
    """Wall-clock seconds of ``n`` runs after warm-up: median, quartiles and extremes."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @property
    def spread(self) -> float:
        """Half the inter-quartile range, relative to the median."""
        return (self.q3 - self.q1) / 2 / self.median if self.median else 0.0


def measure(
    run: Callable[[], Any], *, repeats: int, warmup: int, budget_s: float = 0.0, min_repeats: int = 10
) -> Stats:
    """Calls ``run`` (which must block until its result is ready) ``warmup`` times, then times ``repeats`` calls.

    With ``budget_s > 0`` the number of timed calls shrinks to fit the budget (judged from the last
    warm-up call), but never below ``min(min_repeats, repeats)``: it keeps the largest cases of a
    suite from dominating its wall time.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    last = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        run()
        last = time.perf_counter() - start
    if budget_s > 0 and last > 0:
        repeats = max(min(repeats, min_repeats), min(repeats, int(budget_s / last)))
    times = np.empty(repeats)
    for k in range(repeats):
        start = time.perf_counter()
        run()
        times[k] = time.perf_counter() - start
    return _stats(times)


def measure_interleaved(
    runs: dict[str, Callable[[], Any]], *, repeats: int, warmup: int, budget_s: float = 0.0, min_repeats: int = 10
) -> dict[str, Stats | Exception]:
    """:func:`measure` for several ``runs`` at once, timed in rounds: each round calls every run once.

    A machine whose speed drifts (other tenants, clock changes) then shifts every run alike, so their
    ratios hold even where the medians move: on a shared 2-core VM, timing one implementation after
    another moved a ratio by up to 1.5x between runs (``benchmarks/RESULTS.md``, step 15). The order
    within a round rotates. All runs get the same number of rounds, which ``budget_s`` caps from the
    slowest run's last warm-up call (never below ``min(min_repeats, repeats)``). A run that raises is
    returned as its exception and leaves the rounds.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    results: dict[str, Stats | Exception] = {}
    live, slowest = dict(runs), 0.0
    for name, run in runs.items():
        try:
            for _ in range(warmup):
                start = time.perf_counter()
                run()
                slowest = max(slowest, time.perf_counter() - start)
        except Exception as err:  # reported by the caller; the others go on
            results[name] = err
            del live[name]
    if budget_s > 0 and slowest > 0:
        repeats = max(min(repeats, min_repeats), min(repeats, int(budget_s / slowest)))
    times = {name: [] for name in live}
    for k in range(repeats):
        names = list(live)
        for name in names[k % len(names) :] + names[: k % len(names)] if names else []:
            start = time.perf_counter()
            try:
                live[name]()
            except Exception as err:
                results[name] = err
                del live[name]
                continue
            times[name].append(time.perf_counter() - start)
    for name in live:
        results[name] = _stats(np.array(times[name]))
    return {name: results[name] for name in runs}


def _stats(times: np.ndarray) -> Stats:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return Stats(float(med), float(q1), float(q3), float(times.min()), float(times.max()), len(times))


def compile_jax(fn: Callable, *args) -> tuple[Callable, float, int | None]:
    """AOT-compiles ``jax.jit(fn)`` for ``args``: ``(compiled, seconds, peak bytes)``.

    The peak is XLA's static estimate from ``memory_analysis()``: arguments + outputs + temporaries
    - aliased bytes (``None`` where the backend does not report it).
    """
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    peak = None
    try:
        m = compiled.memory_analysis()
        peak = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # not every backend reports it; the peak is then unknown
        pass
    return compiled, seconds, peak


def rss_peak_growth(run: Callable[[], Any]) -> int | None:
    """Growth of the process's peak resident memory during one ``run()`` (Linux only, else ``None``).

    Resets the kernel's high-water mark (``VmHWM``) by writing 5 to ``/proc/self/clear_refs``, runs,
    and returns ``VmHWM`` minus the resident size before the run. Used for eager peers (PyTorch),
    whose CPU allocations no allocator statistic reports.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")
