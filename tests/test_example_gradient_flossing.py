"""The gradient-flossing example runs end to end at CI size, writes its metrics, and its flossing phase works."""

from __future__ import annotations

import json
import math


def test_quick_run_writes_metrics_and_flossing_lowers_the_top_exponent(tmp_path, example):
    returned = example("gradient_flossing").main(["--quick", "--out", str(tmp_path), "--floss-every", "20"])

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    assert metrics["example"] == "gradient_flossing" and metrics["args"]["quick"] is True
    assert metrics["arms"] == ["plain", "flossing", "reference"]
    assert set(metrics["delays"]) == {str(d) for d in metrics["task"]["delays"]}
    for res in metrics["delays"].values():
        assert len(res["runs"]) == metrics["args"]["seeds"] >= 2
        assert set(res["summary"]) == {"plain", "flossing", "reference", "flossing_minus_plain"}
        before, after = [], []
        for run in res["runs"]:
            plain, flossing = run["plain"], run["flossing"]
            for arm in metrics["arms"]:
                r = run[arm]
                assert len(r["history"]) == metrics["args"]["epochs"]
                assert r["history"][-1]["step"] == metrics["args"]["steps"]
                numbers = [r["final_test_accuracy"], *(h["train_loss"] for h in r["history"])]
                for when in ("lyapunov_init", "lyapunov_after_flossing", "lyapunov_end"):
                    if when in r:
                        assert r[when]["finite"] is True
                        numbers += [r[when]["mean"], r[when]["sem"]]
                assert all(math.isfinite(x) for x in numbers)
                assert 0.0 <= r["final_test_accuracy"] <= 1.0
            assert "lyapunov_after_flossing" in flossing and "lyapunov_after_flossing" not in plain
            # both arms start from the same params: the same exponent at init
            assert flossing["lyapunov_init"]["mean"] == plain["lyapunov_init"]["mean"]
            assert plain["lyapunov_init"]["mean"] > 0.05  # the initialisation is chaotic
            before.append(abs(flossing["lyapunov_init"]["mean"]))
            after.append(abs(flossing["lyapunov_after_flossing"]["mean"]))
        # the flossing phase pushes the top exponent towards 0 (0.13 -> 0.09 on average at this size)
        assert sum(after) < sum(before) - 0.02 * len(before)
