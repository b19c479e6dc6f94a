"""Smoke test of the benchmark harness (benchmarks/): selection, bad input, failure handling, outputs.

No timing is asserted; the tiny ``smoke`` suite only checks that the pipeline runs and records.
"""

import dataclasses
import json

import numpy as np
import pytest
from benchmarks import cases, peers, report, runner, timing
from benchmarks.__main__ import main


def test_flops_formula():
    case = cases.Case("lstm", cases.Size(batch=2, steps=5, inputs=4, hidden=8))
    assert case.flops("fwd") == 2 * 4 * 8 * (4 + 8) * 2 * 5
    assert case.flops("fwd+bwd") == 3 * case.flops("fwd")
    assert case.flops("step") == case.flops("fwd") / 5
    stacked = cases.Case("lstm2", cases.Size(2, 5, 4, 8))
    assert stacked.flops("fwd") == case.flops("fwd") + 2 * 4 * 8 * 16 * 2 * 5


def test_default_cpu_matrix_is_the_issues():
    labels = {c.label for c in cases.SUITES["cpu"]}
    assert "lstm/b32-t128-i256-h256" in labels and "elman/b1-t1000-i64-h64" in labels
    assert "lstm2/b32-t100-i256-h256" in labels and len(labels) == 16 + 2 * len(cases.VARIANTS)
    # The call options beside the plain calls: ragged and all-equal lengths, remat (issue 13).
    assert {f"{c}:{v}/b32-t128-i256-h256" for c in ("lstm", "gru") for v in cases.VARIANTS} <= labels
    assert cases.lengths("lstm:ragged", 4, 8) == [8, 7, 6, 4] and cases.lengths("lstm", 4, 8) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(suite="tpu"), "unknown suite 'tpu'; valid: cpu, gpu, smoke"),
        (dict(suite="cpu", cells=["lstm", "rnn"]), "unknown cell 'rnn'; valid: lstm, gru, elman, lstm2"),
        (dict(suite="cpu", sizes=["b3-t1-i1-h1"]), "unknown size 'b3-t1-i1-h1' in suite 'cpu'; valid: b1-t1000"),
        (dict(suite="smoke", modes=["bwd"]), "unknown mode 'bwd'; valid: fwd, fwd\\+bwd, step"),
    ],
)
def test_select_rejects_unknown_names_listing_valid_ones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cases.select(**kwargs)


def test_unknown_implementation_and_bad_repeats():
    with pytest.raises(ValueError, match="unknown implementation 'haiku'; valid: recurrax"):
        peers.implementations(["haiku"])
    with pytest.raises(ValueError, match="repeats"):
        timing.measure(lambda: None, repeats=0, warmup=0)


def test_cli_rejects_bad_input_with_the_valid_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "cpu", "--cells", "transformer"])
    assert exc.value.code == 2
    assert "valid: lstm, gru, elman, lstm2" in capsys.readouterr().err


def test_measure_statistics():
    stats = timing.measure(lambda: sum(range(100)), repeats=5, warmup=1)
    assert stats.n == 5 and stats.min <= stats.q1 <= stats.median <= stats.q3 <= stats.max


def test_interleaved_rounds_rotate_and_a_failing_run_leaves_them():
    calls = []

    def recorder(name, fail_at=None):
        def run():
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")

        return run

    out = timing.measure_interleaved(
        {"a": recorder("a"), "b": recorder("b"), "c": recorder("c", fail_at=3)}, repeats=4, warmup=1
    )
    # Warm-up in order, then rounds whose order rotates; "c" fails on its third call (second round).
    rounds = [["a", "b", "c"], ["a", "b", "c"], ["b", "c", "a"], ["a", "b"], ["b", "a"]]
    assert calls == [name for r in rounds for name in r]
    assert out["a"].n == out["b"].n == 4 and isinstance(out["c"], RuntimeError)
    with pytest.raises(ValueError, match="repeats"):
        timing.measure_interleaved({"a": recorder("a")}, repeats=0, warmup=0)


def test_failing_peer_is_reported_and_the_run_goes_on():
    def broken(case, mode):
        raise RuntimeError("peer exploded")

    bad = peers.Impl("broken", "jax", ("lstm",), broken)
    ok = peers.implementations(["recurrax"])[0]
    case = cases.SUITES["smoke"][0]
    lines = []
    records = runner.run([case], ["fwd"], [bad, ok], repeats=1, warmup=0, log=lines.append)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "RuntimeError: peer exploded" in records[0]["error"] and "FAILED" in lines[0]

    def breaks_when_run(case, mode):
        return dataclasses.replace(ok.build(case, mode), run=lambda: 1 / 0)

    late = peers.Impl("late", "jax", ("lstm",), breaks_when_run)
    records = runner.run([case], ["fwd"], [late, ok], repeats=2, warmup=1)
    assert [r["status"] for r in records] == ["failed", "ok"] and "ZeroDivisionError" in records[0]["error"]
    missing = peers.Impl("ghost", "no_such_package_xyz", ("lstm",), broken)
    assert missing.unavailable(case, "fwd").startswith("missing")
    lines.clear()
    records = runner.run([case], ["fwd"], [missing], repeats=1, warmup=0, log=lines.append)
    assert records[0]["status"] == "missing" and "FAILED" not in lines[0] and "no_such_package_xyz" in lines[0]


def test_cli_smoke_run_writes_json_markdown_and_plot(tmp_path, capsys):
    pytest.importorskip("torch")
    results = tmp_path / "RESULTS.md"
    results.write_text("# notes kept\n")
    argv = ["--suite", "smoke", "--cells", "lstm", "--modes", "fwd,fwd+bwd", "--peer", "recurrax"]
    argv += [
        "--peer",
        "torch.nn",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--out",
        str(tmp_path),
        "--results-md",
        str(results),
    ]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert payload["environment"]["torch_threads"] >= 1 and payload["environment"]["versions"]["jax"]
    ok = {(r["impl"], r["mode"]): r for r in payload["records"] if r["status"] == "ok"}
    assert set(ok) == {(i, m) for i in ("recurrax", "torch.nn") for m in ("fwd", "fwd+bwd")}
    assert all(np.isfinite(r["median_s"]) and r["repeats"] == 2 for r in ok.values())
    assert ok[("recurrax", "fwd+bwd")]["peak_bytes"] > 0 and ok[("recurrax", "fwd")]["compile_s"] > 0
    text = results.read_text()
    assert text.startswith("# notes kept") and "python -m benchmarks --suite smoke" in text
    assert "| lstm b2-t5-i4-h8 | fwd | " in text and (tmp_path / "smoke.png").stat().st_size > 0
    assert "[1/4" in capsys.readouterr().err.replace("[  ", "[")  # the progress display
    main(argv)  # a second run replaces its section instead of appending another
    assert results.read_text().count("BEGIN GENERATED smoke") == 1


def test_ratios_are_recurrax_time_over_peer_time():
    records = [
        {"cell": "lstm", "size": "s", "mode": "fwd", "impl": "recurrax", "status": "ok", "median_s": 1.0},
        {"cell": "lstm", "size": "s", "mode": "fwd", "impl": "torch.nn", "status": "ok", "median_s": 4.0},
        {"cell": "lstm", "size": "s", "mode": "fwd", "impl": "x", "status": "failed", "error": "e"},
    ]
    assert report.ratios(records) == {("lstm", "s", "fwd"): {"torch.nn": 0.25}}


def test_conv_benchmark_quick_run_times_recurrax_and_flax(capsys):
    """``python -m benchmarks.conv --quick``: every mode runs and prints the table (numbers are not checked)."""
    from benchmarks import conv

    records = conv.main(["--quick", "--peer", "recurrax conv_lstm", "--peer", "flax.linen ConvLSTMCell"])
    assert {(r["impl"], r["mode"]) for r in records if "min_s" in r} == {
        (impl, mode) for impl in ("recurrax conv_lstm", "flax.linen ConvLSTMCell") for mode in conv.MODES
    }
    assert "| recurrax conv_lstm | fwd+bwd |" in capsys.readouterr().out


def test_gpu_check_refuses_without_a_gpu_and_runs_its_parts_within_the_limit(tmp_path, monkeypatch, capsys):
    """``python -m benchmarks.gpu_check``: no GPU, nothing run and status 2; with one (faked here, each part a
    stand-in command), a summary naming the device, each part's output, and a part past its limit stopped."""
    import sys

    from benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "_gpu_devices", lambda: [])
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no GPU" in capsys.readouterr().out and not (tmp_path / "gpu_check.md").exists()
    real = gpu_check.commands(8, tmp_path)
    assert [name for name, _ in real] == ["conformance tests", "gpu suite"]
    assert "tests/backends" in real[0][1] and "--suite" in real[1][1] and str(tmp_path) in real[1][1]

    monkeypatch.setattr(gpu_check, "_gpu_devices", lambda: ["cuda(id=0)"])
    quick = [sys.executable, "-c", "print('3 passed')"]
    slow = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"]
    monkeypatch.setattr(gpu_check, "commands", lambda workers, out: [("conformance tests", quick), ("gpu suite", slow)])
    assert gpu_check.main(["--out", str(tmp_path), "--minutes", "0.05", "--test-share", "0.5"]) == 0
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "Devices: cuda(id=0)" in summary and "3 passed" in summary
    assert "### conformance tests: exit 0" in summary and "### gpu suite: stopped at its limit" in summary
    assert "started" in summary  # what the stopped part had printed
