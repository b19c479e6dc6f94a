"""The flagship example runs end to end at CI size and writes its report, figures and metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cell_vs_hidden.py"


def test_quick_run_writes_report_and_metrics(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("example_cell_vs_hidden", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["example"] == "cell_vs_hidden" and metrics["args"]["quick"] is True
    T, H = metrics["task"]["T"], metrics["task"]["hidden"]
    assert set(metrics["models"]) == {"lstm", "gru", "elman"}
    for name, m in metrics["models"].items():
        fields = {"h", "c"} if name == "lstm" else {"h"}
        assert set(m["gradient"]) == fields and all(len(v) == T + 1 for v in m["gradient"].values())
        assert set(m["gradient_at_steps_back"]) == fields
        assert set(m["retention_at_steps_after"]) == fields
        assert {"h.h", "total"} <= set(m["jacobian_product_at_steps_back"])
        assert len(m["lyapunov"]["exponents"]) == (2 * H if name == "lstm" else H)
        assert m["lyapunov"]["finite"] is True
        assert ("gate_timescales" in m) == (name != "elman")
        numbers = [m["final_test_mse"], *m["gradient_at_steps_back"].values(), m["lyapunov"]["max"]]
        assert all(math.isfinite(x) for x in numbers)
    assert "slow_points" in metrics["models"]["lstm"]

    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Cell state versus hidden state")
    for figure in metrics["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000
        assert f"]({figure})" in report
    assert {"gradient_flow.png", "perturbation.png", "lyapunov.png", "timescales.png"} <= set(metrics["figures"])
