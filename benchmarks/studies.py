"""Focused experiments behind the speed work, each printed as a Markdown table and saved as JSON.

python -m benchmarks.studies unroll      # loop unroll per path (fused / generic), fwd and fwd+bwd
python -m benchmarks.studies precision   # bf16 matmuls + float32 state against float32, 1,000 steps
python -m benchmarks.studies remat       # peak memory and time of fwd+bwd at T = 4,096
python -m benchmarks.studies hlo         # ops per step in the compiled loop bodies
python -m benchmarks.studies stack       # a 2-layer LSTM: the stack's one-step form on `stack` / `sequential`,
                                         # the stacked layer, torch.nn.LSTM(num_layers=2)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from collections.abc import Callable, Sequence

from benchmarks import environment
from benchmarks.timing import compile_jax, measure

HERE = pathlib.Path(__file__).parent


def _time(fn: Callable, args: tuple, repeats: int) -> tuple[float, float, int | None]:
    """``(median seconds, compile seconds, XLA peak bytes)`` of ``jit(fn)(*args)``."""
    import jax

    compiled, seconds, peak = compile_jax(fn, *args)
    stats = measure(lambda: jax.block_until_ready(compiled(*args)), repeats=repeats, warmup=2)
    return stats.median, seconds, peak


def _problem(kind: str, batch: int, steps: int, size: int, **cell_kwargs):
    import jax

    import recurrax as rx

    cell = getattr(rx, kind)(size, **cell_kwargs)
    params = cell.init(jax.random.key(0), size)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, size))
    return cell, params, xs


def _fwd(cell, **kw):
    import recurrax as rx

    return lambda p, xs: rx.scan(cell, p, xs, **kw)[1]


def _fwd_bwd(cell, **kw):
    import jax
    import jax.numpy as jnp

    return jax.grad(lambda p, xs: jnp.sum(_fwd(cell, **kw)(p, xs)), argnums=(0, 1))


def unroll(repeats: int) -> tuple[list[str], list[dict]]:
    rows, lines = [], ["| cell | size | path | unroll | fwd ms | fwd+bwd ms |", "|---|---|---|---|---|---|"]
    for kind, (b, t, h) in [("lstm", (32, 128, 256)), ("gru", (32, 128, 256)), ("lstm", (1, 1000, 64))]:
        cell, p, xs = _problem(kind, b, t, h)
        for path, kw in [("fused", {}), ("generic", {"backend": "sequential"})]:
            for u in (1, 2, 4, 8):
                fwd = _time(_fwd(cell, unroll=u, **kw), (p, xs), repeats)[0]
                bwd = _time(_fwd_bwd(cell, unroll=u, **kw), (p, xs), repeats)[0]
                rows.append(dict(cell=kind, size=(b, t, h), path=path, unroll=u, fwd_s=fwd, fwd_bwd_s=bwd))
                lines.append(f"| {kind} | B={b} T={t} H={h} | {path} | {u} | {fwd * 1e3:.2f} | {bwd * 1e3:.2f} |")
                print(lines[-1], file=sys.stderr)
    return lines, rows


def precision(repeats: int) -> tuple[list[str], list[dict]]:
    """bf16 matmuls (``dtype=bfloat16``; float32 params, state and gate math) against float32."""
    import jax.numpy as jnp
    import numpy as np

    import recurrax as rx

    lines = [
        "| cell | step | max abs err h | mean abs err h | rel. err (norm) | max abs err c |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    for kind in ("lstm", "gru"):
        cell32, p, xs = _problem(kind, 32, 1000, 256)
        cell16 = getattr(rx, kind)(256, dtype=jnp.bfloat16)
        _, _, s32 = rx.scan(cell32, p, xs, return_states=True)
        _, _, s16 = rx.scan(cell16, p, xs, return_states=True)
        for t in (1, 10, 100, 1000):
            e = np.abs(np.asarray(s16.h[:, t - 1]) - np.asarray(s32.h[:, t - 1]))
            rel = float(np.linalg.norm(e) / np.linalg.norm(np.asarray(s32.h[:, t - 1])))
            ec = (
                float(np.abs(np.asarray(s16.c[:, t - 1]) - np.asarray(s32.c[:, t - 1])).max())
                if kind == "lstm"
                else None
            )
            rows.append(
                dict(cell=kind, step=t, max_abs=float(e.max()), mean_abs=float(e.mean()), rel=rel, max_abs_c=ec)
            )
            c_text = f"{ec:.2e}" if ec is not None else "–"
            lines.append(f"| {kind} | {t} | {e.max():.2e} | {e.mean():.2e} | {rel:.2e} | {c_text} |")
        small = dict(batch=32, steps=128, size=256)
        c32, p, xs = _problem(kind, **small)
        c16 = getattr(rx, kind)(256, dtype=jnp.bfloat16)
        t32 = [_time(f(c32), (p, xs), repeats)[0] for f in (_fwd, _fwd_bwd)]
        t16 = [_time(f(c16), (p, xs), repeats)[0] for f in (_fwd, _fwd_bwd)]
        rows.append(dict(cell=kind, speed=small, f32_s=t32, bf16_s=t16))
        lines.append(
            f"| {kind} speed B=32 T=128 H=256 | fwd / fwd+bwd | f32 {t32[0] * 1e3:.1f} / {t32[1] * 1e3:.1f} ms | "
            f"bf16 {t16[0] * 1e3:.1f} / {t16[1] * 1e3:.1f} ms | | |"
        )
    return lines, rows


def remat(repeats: int) -> tuple[list[str], list[dict]]:
    lines = ["| cell | path | fwd+bwd peak MiB (XLA) | fwd+bwd ms |", "|---|---|---|---|"]
    rows = []
    for kind in ("lstm", "gru"):
        cell, p, xs = _problem(kind, 16, 4096, 256)
        for name, kw in [
            ("fused", {}),
            ("fused, remat=True", {"remat": True}),
            ("generic", {"backend": "sequential"}),
            ("generic, remat=True", {"backend": "sequential", "remat": True}),
        ]:
            median, _, peak = _time(_fwd_bwd(cell, **kw), (p, xs), repeats)
            rows.append(dict(cell=kind, path=name, peak_bytes=peak, fwd_bwd_s=median))
            lines.append(f"| {kind} B=16 T=4096 I=H=256 | {name} | {peak / 2**20:.0f} | {median * 1e3:.0f} |")
            print(lines[-1], file=sys.stderr)
    return lines, rows


def hlo(repeats: int) -> tuple[list[str], list[dict]]:
    """Counts the dots and fusions each compiled while-loop body runs per iteration."""
    import jax

    del repeats
    from recurrax.backends.tuning import DEFAULT_UNROLL

    lines = ["| cell | path | mode | loop | steps / iteration | dots | other fusions / ops |", "|---" * 7 + "|"]
    rows = []
    for kind in ("lstm", "gru"):
        cell, p, xs = _problem(kind, 32, 128, 256)
        for path, kw in [("fused", {}), ("generic", {"backend": "sequential"})]:
            for mode, f in [("fwd", _fwd(cell, **kw)), ("fwd+bwd", _fwd_bwd(cell, **kw))]:
                text = jax.jit(f).lower(p, xs).compile().as_text()
                steps = DEFAULT_UNROLL.get(jax.default_backend(), 1) if path == "fused" else 1
                for k, (dots, others) in enumerate(_loop_bodies(text)):
                    rows.append(dict(cell=kind, path=path, mode=mode, loop=k, steps=steps, dots=dots, others=others))
                    lines.append(f"| {kind} | {path} | {mode} | {k} | {steps} | {dots} | {others} |")
    return lines, rows


def _loop_bodies(text: str) -> list[tuple[int, int]]:
    """``(dots, other fusions and copies)`` for each while body in compiled HLO text."""
    out = []
    for name in re.findall(r"while\(.*?body=(%[\w.\-]+)", text):
        start = text.index("\n" + name + " ")
        body = text[start : text.index("\n}\n", start)]
        ops = re.findall(r"= \S+ (fusion|dot|copy|concatenate|transpose)\(", body)
        dots = sum(op == "dot" for op in ops) + body.count('"__ynn_fusion"') + len(re.findall(r"kind=kOutput", body))
        out.append((dots, len(ops) - dots))
    return out


FLAG_SETS = (
    "",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_use_multi_output_fusion=true",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_use_thunk_runtime=false",
)


def flags(repeats: int) -> tuple[list[str], list[dict]]:
    """recurrax LSTM (B=32, T=128, I=H=256) under each XLA_FLAGS set, in fresh processes, ABAB-interleaved.

    Each process also times torch.nn.LSTM, so ``recurrax / torch`` cancels most of the machine's load.
    """
    import os
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(2):
            for k, flag in enumerate(FLAG_SETS):
                out = pathlib.Path(tmp) / f"{round_}-{k}"
                cmd = [sys.executable, "-m", "benchmarks", "--suite", "cpu", "--cells", "lstm"]
                cmd += ["--cases", "b32-t128-i256-h256", "--modes", "fwd,fwd+bwd", "--peer", "recurrax"]
                cmd += ["--peer", "torch.nn", "--repeats", str(repeats), "--out", str(out)]
                cmd += ["--results-md", str(out / "R.md"), "--no-plot"]
                env = {**os.environ, "XLA_FLAGS": flag}
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
                if done.returncode:
                    rows.append(dict(flags=flag, round=round_, error=done.stderr[-300:]))
                    continue
                recs = json.loads((out / "cpu.json").read_text())["records"]
                t = {(r["impl"], r["mode"]): r.get("median_s") for r in recs}
                for mode in ("fwd", "fwd+bwd"):
                    rx_t, torch_t = t.get(("recurrax", mode)), t.get(("torch.nn", mode))
                    rows.append(dict(flags=flag, round=round_, mode=mode, recurrax_s=rx_t, torch_s=torch_t))
                print(f"round {round_} {flag or '(none)'} done", file=sys.stderr)
    lines = ["| XLA_FLAGS | mode | recurrax ms (2 rounds) | recurrax / torch (2 rounds) |", "|---|---|---|---|"]
    for flag in FLAG_SETS:
        for mode in ("fwd", "fwd+bwd"):
            got = [r for r in rows if r["flags"] == flag and r.get("mode") == mode and r["recurrax_s"]]
            ms = ", ".join(f"{r['recurrax_s'] * 1e3:.1f}" for r in got)
            ratio = ", ".join(f"{r['recurrax_s'] / r['torch_s']:.2f}" for r in got if r["torch_s"])
            lines.append(f"| `{flag or '(none)'}` | {mode} | {ms or 'failed'} | {ratio} |")
    return lines, rows


def interleaved(repeats: int) -> tuple[list[str], list[dict]]:
    """Round-robin timing of recurrax and its peers (one run each per round), robust to a varying machine load.

    LSTM and GRU at B=32, T=128, I=H=256; ratios are recurrax (fused) time / implementation time.
    """
    import time

    import numpy as np

    from benchmarks import cases, peers

    names = ["recurrax", "recurrax (generic scan)", "flax.linen OptimizedLSTMCell", "flax.linen GRUCell"]
    names += ["equinox LSTMCell", "equinox GRUCell", "torch.nn", "GEMM floor"]
    lines = ["| case | mode | implementation | median ms | recurrax / it |", "|---|---|---|---|---|"]
    rows = []
    for cell in ("lstm", "gru"):
        case = cases.Case(cell, cases.Size(32, 128, 256, 256))
        for mode in ("fwd", "fwd+bwd"):
            impls = [i for i in peers.implementations(names) if i.unavailable(case, mode) is None]
            prepared = {i.name: i.build(case, mode) for i in impls}
            times = {name: [] for name in prepared}
            for _ in range(2):  # warm-up
                for p in prepared.values():
                    p.run()
            for _ in range(repeats):
                for name, p in prepared.items():
                    start = time.perf_counter()
                    p.run()
                    times[name].append(time.perf_counter() - start)
            med = {name: float(np.median(t)) for name, t in times.items()}
            for name, m in med.items():
                rows.append(dict(cell=cell, mode=mode, impl=name, median_s=m, n=repeats))
                lines.append(
                    f"| {cell} B=32 T=128 I=H=256 | {mode} | {name} | {m * 1e3:.1f} | {med['recurrax'] / m:.2f} |"
                )
            print("\n".join(lines[-len(med) :]), file=sys.stderr)
    return lines, rows


def stack(repeats: int) -> tuple[list[str], list[dict]]:
    """A 2-layer LSTM at B=32, T=128, I=H=256, forward and training (fwd+bwd), timed in interleaved rounds:
    ``scan(as_cell(stack))`` on the ``stack`` backend (layer after layer) and on ``sequential`` (both layers
    stepped together), ``scan`` of the ``stacked`` layer, and ``torch.nn.LSTM(num_layers=2)`` when installed."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import recurrax as rx
    from benchmarks.timing import measure_interleaved

    batch, steps, size = 32, 128, 256
    layer = rx.stacked([rx.lstm(size), rx.lstm(size)])
    cell = rx.as_cell(layer)
    params = layer.init(jax.random.key(0), size)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, size))
    variants = {
        "as_cell, backend stack": (cell, {}),
        "as_cell, backend sequential": (cell, {"backend": "sequential"}),
        "stacked layer": (layer, {}),
    }
    lines = ["| mode | implementation | median ms | / stack backend |", "|---|---|---|---|"]
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        runs = {}
        for name, (net, kw) in variants.items():

            def fwd(p, x, net=net, kw=kw):
                return rx.scan(net, p, x, **kw)[1]

            fn = fwd if mode == "fwd" else jax.grad(lambda p, x, fwd=fwd: jnp.sum(fwd(p, x)), argnums=(0, 1))
            compiled = jax.jit(fn)
            runs[name] = lambda compiled=compiled: jax.block_until_ready(compiled(params, xs))
        try:
            import torch

            module = torch.nn.LSTM(size, size, num_layers=2, batch_first=True)
            tx = torch.from_numpy(np.array(xs)).requires_grad_(mode != "fwd")

            def torch_run(module=module, tx=tx, mode=mode):
                if mode == "fwd":
                    with torch.no_grad():
                        module(tx)
                else:
                    module.zero_grad()
                    module(tx)[0].sum().backward()

            runs["torch.nn.LSTM(num_layers=2)"] = torch_run
        except ImportError:
            pass
        stats = measure_interleaved(runs, repeats=repeats, warmup=2)
        base = stats["as_cell, backend stack"].median
        for name, st in stats.items():
            if isinstance(st, Exception):
                lines.append(f"| {mode} | {name} | failed: {st} | |")
                continue
            rows.append(dict(mode=mode, impl=name, median_s=st.median, n=repeats))
            lines.append(f"| {mode} | {name} | {st.median * 1e3:.1f} | {st.median / base:.2f} |")
        print("\n".join(lines[-len(stats) :]), file=sys.stderr)
    return lines, rows


STUDIES = {
    "stack": stack,
    "unroll": unroll,
    "precision": precision,
    "remat": remat,
    "hlo": hlo,
    "flags": flags,
    "interleaved": interleaved,
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies", description=__doc__)
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    args = p.parse_args(argv)
    load_start = environment.load_average()
    lines, rows = STUDIES[args.study](args.repeats)
    load = f"load average {load_start} -> {environment.load_average()}"
    print("\n".join([*lines, "", load]))
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"study": args.study, "repeats": args.repeats, "load_average": load, "rows": rows}
    (args.out / f"study-{args.study}.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
