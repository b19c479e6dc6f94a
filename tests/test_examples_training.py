"""The training examples run end to end on a tiny budget, learn something, and write their metrics.

Each example is imported from ``examples/`` and its ``main`` called with ``--quick`` (a few dozen
steps); the check is that the loss goes down, and that ``metrics.json`` holds the final metrics.
The full runs and their results are in ``examples/README.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def _run(name: str, tmp_path: Path, example, *args: str) -> dict:
    metrics = example(name).main(["--quick", "--epochs", "3", "--out", str(tmp_path), *args])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["example"] == name
    assert written["args"]["quick"] is True
    return metrics


def test_char_lm_learns(tmp_path, example):
    m = _run("char_lm", tmp_path, example, "--steps", "40")
    assert m["unigram_entropy_bpc"] > 3.0  # English-like text, not a degenerate sample
    assert m["final_train_bpc"] < m["first_train_bpc"] - 1.0
    assert m["history"][-1]["val_bpc"] < m["history"][0]["val_bpc"]
    assert m["sample"].startswith("Return the ")


def test_sequence_classifier_learns(tmp_path, example):
    m = _run("sequence_classifier", tmp_path, example, "--steps", "60", "--max-pairs", "6")
    assert m["final_train_loss"] < m["first_train_loss"]
    assert 0.0 <= m["test_accuracy"] <= 1.0
    assert set(m["test_accuracy_by_kind"]) == {"balanced", "swapped", "flipped"}


@pytest.mark.parametrize("cell", ["lstm"])
def test_long_memory_learns(tmp_path, example, cell):
    m = _run("long_memory", tmp_path, example, "--steps", "60", "--T", "20")
    history = m[cell]["history"]
    assert history[-1]["train_mse"] < history[0]["train_mse"]
    assert m["baseline_mse"] == pytest.approx(1 / 6)
    assert {"lstm", "elman"} <= set(m)


@pytest.mark.parametrize("cell", ["gru"])
def test_ppo_memory_runs(tmp_path, example, cell):
    m = _run("ppo_memory", tmp_path, example, "--cell", cell)
    for name in ("recurrax", "flax", "mlp"):
        r = m[name]
        for key in ("return_last_updates", "success_last_updates", "ms_per_update", "max_replay_gap"):
            assert math.isfinite(r[key]), (name, key, r[key])
        assert -1.0 <= r["return_last_updates"] <= 1.0 and 0.0 <= r["success_last_updates"] <= 1.0
        assert -1.0 <= r["greedy_eval"]["return"] <= 1.0 and 0.0 <= r["greedy_eval"]["success"] <= 1.0
        assert r["ms_per_update"] > 0 and len(r["history"]) == 3
        # Acting (cell.step + a hand-written reset) and training (scan with resets=) see the same policy.
        assert r["max_replay_gap"] < 1e-3, (name, r["max_replay_gap"])
    # The Flax twin starts from the same weights and random numbers: its first rollouts act the same.
    assert m["same_actions_updates"] >= 1
    assert m["recurrax_over_flax_ms"] > 0
