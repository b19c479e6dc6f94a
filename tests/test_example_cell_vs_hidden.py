"""The flagship example runs end to end at CI size and writes its report, figures and metrics."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

pytest.importorskip("matplotlib")


def test_quick_run_writes_report_and_metrics(tmp_path, example):
    example("cell_vs_hidden").main(["--quick", "--out", str(tmp_path)])

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["example"] == "cell_vs_hidden" and metrics["args"]["quick"] is True
    T, H = metrics["task"]["T"], metrics["task"]["hidden"]
    assert set(metrics["models"]) == {"lstm", "gru", "elman", "lstm2"}
    for name, m in metrics["models"].items():
        fields = {"lstm": {"h", "c"}, "lstm2": {"0.h", "0.c", "1.h", "1.c"}}.get(name, {"h"})
        assert set(m["fields"]) == fields
        assert set(m["gradient"]) == fields and all(len(v) == T + 1 for v in m["gradient"].values())
        assert set(m["gradient_at_steps_back"]) == fields
        assert set(m["retention_at_steps_after"]) == fields
        assert set(m["jacobian_product_at_steps_back"]) == {*fields, "total"}
        assert len(m["lyapunov"]["exponents"]) == {"lstm": 2 * H, "lstm2": 4 * H}.get(name, H)
        assert m["lyapunov"]["finite"] is True
        gated = {"lstm": {"c"}, "gru": {"h"}, "lstm2": {"0.c", "1.c"}}.get(name, set())
        assert set(m.get("gate_timescales", {})) == gated
        numbers = [m["final_test_mse"], *m["gradient_at_steps_back"].values(), m["lyapunov"]["max"]]
        assert all(math.isfinite(x) for x in numbers)
    assert "slow_points" in metrics["models"]["lstm"]
    torch = metrics["models"]["lstm2"]["torch"]
    if importlib.util.find_spec("torch") is not None:  # the stack went through torch.nn.LSTM(num_layers=2)
        assert torch["converted"] and torch["max_abs_output_difference"] < 1e-5
        assert "num_layers=2" in torch["module"]
    else:
        assert not torch["converted"]

    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Cell state versus hidden state")
    for figure in metrics["figures"]:
        assert (tmp_path / figure).stat().st_size > 1000
        assert f"]({figure})" in report
    assert {"gradient_flow.png", "perturbation.png", "lyapunov.png", "timescales.png"} <= set(metrics["figures"])
    assert {"deep_gradient_flow.png", "deep_perturbation.png", "deep_timescales.png"} <= set(metrics["figures"])
    assert "| 2-layer LSTM, layer 2 |" in report
