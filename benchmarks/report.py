"""Results as JSON, as Markdown tables (spliced into ``benchmarks/RESULTS.md``) and as a plot."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from benchmarks.cases import MODES
from benchmarks.peers import REFERENCE

Payload = dict[str, Any]


def write_json(path: pathlib.Path, payload: Payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def ratios(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(cell, size, mode): {peer: recurrax median / peer median}}`` over successful measurements."""
    times: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in records:
        if r["status"] == "ok":
            times.setdefault((r["cell"], r["size"], r["mode"]), {})[r["impl"]] = r["median_s"]
    out = {}
    for key, by_impl in times.items():
        ref = by_impl.get(REFERENCE)
        if ref is not None:
            out[key] = {impl: ref / t for impl, t in by_impl.items() if impl != REFERENCE}
    return out


def markdown(payload: Payload) -> str:
    """The suite's section of ``RESULTS.md``: how it was run, a ratio summary, one table per case."""
    env, records = payload["environment"], payload["records"]
    v = env["versions"]
    lines = [
        f"## Suite `{payload['suite']}` ({env['date']})",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['platform']}, Python {env['python']}. "
        f"Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ". "
        f"JAX backend `{env['jax_backend']}`; XLA_FLAGS `{env['XLA_FLAGS'] or '(none)'}`; "
        f"torch threads {env['torch_threads']}; git {env['git_commit']}. "
        f"Load average (1/5/15 min) at start {env['load_average']}, at end {payload.get('load_average_end')}; "
        f"wall time {payload.get('wall_s', 0) / 60:.1f} min.",
        "",
        f"Times are medians of {payload['repeats']} runs after {payload['warmup']} warm-up runs (fewer, at least 10, "
        f"where {payload.get('budget_s', 0)} s of runs would be exceeded; see n), the implementations of a case and "
        "mode timed in interleaved rounds so that all see the same machine; ± is half the "
        "inter-quartile range. **ratio = recurrax time / peer time** (below 1: recurrax is faster). "
        "GFLOP/s counts 2·gates·H·(I+H)·B·T per layer (×3 for fwd+bwd, T=1 for step). "
        "Peak memory of fwd+bwd: XLA `memory_analysis` (arguments + outputs + temporaries) for JAX, "
        "peak RSS growth for torch. Compile time is separate from run time.",
        "",
    ]
    lines += _summary_table(records)
    for cell, size in dict.fromkeys((r["cell"], r["size"]) for r in records):
        lines += [
            "",
            f"### {cell} {size}",
            "",
            *_case_table([r for r in records if (r["cell"], r["size"]) == (cell, size)]),
        ]
    problems = [r for r in records if r["status"] in ("failed", "missing", "skipped")]
    if problems:
        lines += ["", "### Not measured", ""]
        lines += [f"- {r['cell']} {r['size']} {r['mode']} **{r['impl']}**: {r['error']}" for r in problems]
    return "\n".join(lines) + "\n"


def _summary_table(records: list[dict[str, Any]]) -> list[str]:
    table = ratios(records)
    peers = list(dict.fromkeys(r["impl"] for r in records if r["impl"] != REFERENCE and r["status"] == "ok"))
    if not table or not peers:
        return []
    lines = [
        "### Summary: recurrax time / peer time",
        "",
        "| case | mode | " + " | ".join(peers) + " |",
        "|---|---|" + "---|" * len(peers),
    ]
    for (cell, size, mode), by_peer in table.items():
        cells = [f"{by_peer[p]:.2f}" if p in by_peer else "" for p in peers]
        lines.append(f"| {cell} {size} | {mode} | " + " | ".join(cells) + " |")
    return lines


def _case_table(records: list[dict[str, Any]]) -> list[str]:
    rat = ratios(records)
    head = "| implementation | " + " | ".join(f"{m} ({_unit(m)}, n)" for m in MODES)
    head += " | ratio fwd | ratio fwd+bwd | GFLOP/s fwd | GFLOP/s fwd+bwd | compile s fwd / fwd+bwd | peak fwd+bwd MB |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for impl in dict.fromkeys(r["impl"] for r in records):
        by_mode = {r["mode"]: r for r in records if r["impl"] == impl}
        row = [impl] + [_time(by_mode.get(m), m) for m in MODES]
        for m in ("fwd", "fwd+bwd"):
            key = (records[0]["cell"], records[0]["size"], m)
            row.append(f"{rat[key][impl]:.2f}" if impl in rat.get(key, {}) else "")
        row += [_num(by_mode.get(m), "gflops", "{:.1f}") for m in ("fwd", "fwd+bwd")]
        row.append(" / ".join(_num(by_mode.get(m), "compile_s", "{:.2f}") or "–" for m in ("fwd", "fwd+bwd")))
        peak = by_mode.get("fwd+bwd", {}).get("peak_bytes")
        row.append(f"{peak / 2**20:.2f}" if peak is not None else "")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _unit(mode: str) -> str:
    return "µs" if mode == "step" else "ms"


def _time(record: dict[str, Any] | None, mode: str) -> str:
    if record is None:
        return ""
    if record["status"] != "ok":
        return record["status"]
    scale = 1e6 if mode == "step" else 1e3
    return (
        f"{record['median_s'] * scale:.4g} ± {(record['q3_s'] - record['q1_s']) / 2 * scale:.2g} ({record['repeats']})"
    )


def _num(record: dict[str, Any] | None, field: str, fmt: str) -> str:
    if not record or record.get(field) is None:
        return ""
    return fmt.format(record[field])


def splice(path: pathlib.Path, suite: str, section: str) -> None:
    """Replaces the suite's generated section of ``path`` (between markers), keeping all hand-written text."""
    begin, end = f"<!-- BEGIN GENERATED {suite} -->", f"<!-- END GENERATED {suite} -->"
    block = f"{begin}\n{section}{end}"
    text = path.read_text() if path.exists() else "# recurrax benchmark results\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def plot(path: pathlib.Path, payload: Payload) -> bool:
    """Bar chart of recurrax's speed-up (peer time / recurrax time) per case and peer; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = ratios(payload["records"])
    modes = [m for m in ("fwd", "fwd+bwd") if any(k[2] == m for k in table)]
    if not modes:
        return False
    peers = list(dict.fromkeys(p for by_peer in table.values() for p in by_peer))
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(8, 0.9 * len(table) / len(modes) + 4), 4 * len(modes)))
    for ax, mode in zip(axes if len(modes) > 1 else [axes], modes):
        keys = [k for k in table if k[2] == mode]
        width = 0.8 / len(peers)
        for j, peer in enumerate(peers):
            xs = [i + j * width for i, k in enumerate(keys) if peer in table[k]]
            ys = [1.0 / table[k][peer] for k in keys if peer in table[k]]
            ax.bar(xs, ys, width, label=peer)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
        ax.set_xticklabels([f"{c}\n{s}" for c, s, _ in keys], fontsize=7)
        ax.set_ylabel("peer time / recurrax time")
        ax.set_title(f"{mode}: above 1 = recurrax faster ({payload['environment']['cpu']})", fontsize=9)
    axes_list = axes if len(modes) > 1 else [axes]
    axes_list[0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
