"""examples/parallel_vs_sequential.py and benchmarks/linear.py run end to end on a tiny budget.

The example must learn (final loss below chance, ``log K``) for both models and write its metrics;
the benchmark must print its table. No time is asserted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_example_quick_learns_and_writes_metrics(tmp_path, example):
    module = example("parallel_vs_sequential")
    args = ["--quick", "--T", "16", "--steps", "60", "--lr", "0.03", "--epochs", "2", "--out", str(tmp_path)]
    metrics = module.main(args)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["example"] == "parallel_vs_sequential" and written["args"]["quick"] is True
    assert metrics["min_gru"]["backend"] == "associative" and metrics["lstm"]["backend"] == "sequential"
    for name in ("min_gru", "lstm"):
        r = metrics[name]
        assert r["final_loss"] < 0.9 * math.log(8), (name, r["final_loss"])
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["ms_per_step"] > 0


def test_benchmark_quick_prints_a_table(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import linear

    rows = linear.main(["--quick", "--modes", "fwd", "--peers", "lstm"])
    out = capsys.readouterr().out
    assert {r.backend for r in rows} == {
        "sequential",
        "associative",
        "chunked",
        "auto",
        "chunked/4",
    }
    assert "| min_gru | associative | 2 | 16 | 8 | fwd |" in out and "| lstm | sequential |" in out
    with pytest.raises(KeyError):
        linear.measure("nope", "sequential", 1, 2, 3, "fwd", repeats=1, warmup=0)
