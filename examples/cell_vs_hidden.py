"""What does an LSTM's cell state ``c`` carry that its hidden state ``h`` does not? Measured, on the adding problem.

An LSTM, a GRU, an Elman RNN and a 2-layer LSTM of the same hidden size are trained on the adding problem
(two marked numbers among T random ones; the target is their sum; ``long_memory.fit``: ``recurrax.scan`` +
optax, explicit keys), then taken apart by :func:`recurrax.dynamics.report`, per state field (and per layer
for the stack, which goes through ``torch.nn.LSTM(num_layers=2)`` and back when torch is installed):

1. gradient flow: ``|| d y_T / d c_t ||`` and ``|| d y_T / d h_t ||`` for every ``t`` (one reverse pass
   per sequence) and the Jacobian products ``|| d c_T / d c_t ||``, ``|| d h_T / d h_t ||``;
2. perturbation retention: a small kick to ``c`` or to ``h`` at ``t0``, and how much of it is left later;
3. forget-gate (LSTM) and update-gate (GRU) timescales ``-1 / log f``;
4. Lyapunov spectra of the trained networks, driven by the task's inputs;
5. the LSTM's slow points at a resting input, on the trajectory's principal components.

It writes ``report.md`` (with PNG figures from :mod:`recurrax.plot`) and ``metrics.json`` to
``--out`` and prints a summary table.

Run: python examples/cell_vs_hidden.py                      (full run, under 5 minutes on 2 CPU cores)
     python examples/cell_vs_hidden.py --quick --out /tmp/q  (CI-sized)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import recurrax as rx
from recurrax import dynamics as dyn
from recurrax import plot

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from long_memory import BASELINE_MSE, adding_batch, fit

NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman", "lstm2": "2-layer LSTM"}
SLOW_Q, FIXED_Q = 1e-4, 1e-10  # speed thresholds of slow points and of (numerically exact) fixed points
GRADIENT_FLOOR = 1e-6  # the gradient horizon: steps back until the read-out gradient falls below this fraction
KICK, T0 = 1e-2, 1  # perturbations land just after the start, so retention is followed over the whole sequence


def log(msg: str) -> None:
    print(f"[cell_vs_hidden] {msg}", flush=True)


def build(name: str, hidden: int, T: int) -> rx.Cell | rx.Layer:
    """The network called ``name``; ``"lstm2"`` is ``torch.nn.LSTM(num_layers=2)``'s layout, two LSTMs stacked.

    The stack starts from the chrono initialisation (Tallec & Ollivier, 2018: forget biases ``log U(1, T - 1)``):
    with the default one, 2 of 4 seeds stayed at the trivial error for 3000 steps (lr 1e-2 and 3e-3, T = 120);
    with it, 3 of 3 learned within 1500 steps at lr 1e-2.
    """
    if name == "lstm2":
        return rx.stacked([rx.lstm(hidden, chrono_t_max=T), rx.lstm(hidden, chrono_t_max=T)])
    return {"lstm": rx.lstm, "gru": rx.gru, "elman": rx.elman}[name](hidden)


def through_torch(net: rx.Layer, params: dict, xs: jax.Array) -> tuple[rx.Layer, dict, dict]:
    """The stack exported to ``torch.nn.LSTM(num_layers=2)`` and converted back with ``from_torch``, when torch is
    installed, with the largest output difference between torch and recurrax; else the stack as it is."""
    try:
        import torch

        from recurrax.interop.torch import from_torch, to_torch
    except ImportError:
        return net, params, {"converted": False, "why": "torch is not installed: the stack trained here is analysed"}
    module = to_torch(net, params["cell"])
    layer, cell_params = from_torch(module)
    with torch.no_grad():
        theirs = module(torch.from_numpy(np.array(xs)))[0].numpy()
    _, ours = rx.scan(layer, cell_params, xs)
    record = {
        "converted": True,
        "module": repr(module),
        "max_abs_output_difference": float(np.abs(theirs - ours).max()),
    }
    return layer, {**params, "cell": cell_params}, record


def analyse(name: str, net, params: dict, args, probe_xs, lyap_xs, key: jax.Array) -> dyn.Report:
    """``dynamics.report`` of a trained network: gradients of its own read-out, kicks, timescales, spectrum, and
    (for the LSTM) the slow points at the resting input ``(0.5, 0)``: a mean value, no marker."""
    head = params["head"]
    return dyn.report(
        net,
        params["cell"],
        probe_xs,
        key=key,
        loss_fn=lambda s: rx.as_cell(net).output(s) @ head["w"] + head["b"],
        t0=T0,
        kick=KICK,
        lyapunov_xs=lyap_xs,
        burn_in=args.lyap_burn_in,
        fixed_point_input=jnp.asarray([0.5, 0.0]) if name == "lstm" else None,
        fixed_point_starts=args.fp_starts,
        fixed_point_steps=args.fp_steps,
        tol_q=SLOW_Q,
        tol_unique=0.05,
    )


def _slowest_decay(time_constants) -> float | None:
    """The largest finite time constant (``inf`` marks modes that do not decay)."""
    finite = np.asarray(time_constants)[np.isfinite(time_constants)]
    return float(finite.max()) if finite.size else None


def record_of(rep: dyn.Report, args, back: int) -> dict:
    """The numbers of a report that ``metrics.json`` and the table keep."""
    after = [k for k in (10, 50, args.T - T0) if T0 + k <= args.T]
    r = {
        "fields": list(rep.fields),
        "gradient": {f: c.tolist() for f, c in rep.gradient.items()},
        "gradient_total": rep.gradient_total.tolist(),
        "gradient_at_steps_back": rep.gradient_at(back),
        "gradient_horizon": rep.gradient_horizon(GRADIENT_FLOOR),
        "jacobian_product_at_steps_back": rep.products_at(back),
        "retention": {f: c[T0:].tolist() for f, c in rep.retention.items()},
        "retention_at_steps_after": {f: {str(k): float(c[T0 + k]) for k in after} for f, c in rep.retention.items()},
        "lyapunov": {
            "exponents": rep.lyapunov.tolist(),
            "max": float(rep.lyapunov[0]),
            "finite": rep.lyapunov_finite,
            "kaplan_yorke": rep.kaplan_yorke,
            "ks_entropy": rep.ks_entropy,
            "steps": args.lyap_steps,
            "burn_in": args.lyap_burn_in,
        },
        "notes": list(rep.notes),
    }
    if rep.timescales:
        r["gate_timescales"] = {
            f: {
                "gate": "forget gate f" if f.endswith("c") else "update gate u",
                "median": float(np.median(t)),
                "max": float(np.max(t)),
                "units_over_T": int(np.sum(t > args.T)),
                "per_unit": t.tolist(),
            }
            for f, t in rep.timescales.items()
        }
    points = rep.fixed_points
    if points is not None:
        lin = points.linearization
        r["slow_points"] = {
            **rep.fixed_points_summary(),
            "input": [0.5, 0.0],
            "fixed": int(np.sum(np.asarray(points.q) < FIXED_Q)),
            "fixed_point_time_constant": _slowest_decay(lin.time_constants[0]) if points.q.shape[0] else None,
        }
    return r


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], steps=1500, quick_steps=30, epochs=6)
    p.set_defaults(out=Path("examples/out/cell_vs_hidden"))
    p.add_argument("--T", type=int, default=None, help="sequence length (default 120; 20 with --quick)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size of every model (default 32; 8 with --quick)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    args = _common.parse(p, argv)
    args.T = args.T or (20 if args.quick else 120)
    args.hidden = args.hidden or (8 if args.quick else 32)
    args.probe = 8 if args.quick else 32  # sequences the analyses average over
    args.lyap_steps, args.lyap_burn_in = (60, 20) if args.quick else (600, 100)
    args.fp_starts, args.fp_steps = (16, 200) if args.quick else (128, 1500)
    back = min(100, args.T)  # "steps back" at which the headline numbers are read
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    key = jax.random.key(args.seed)
    k_train, k_probe, k_lyap, k_analyse = jax.random.split(key, 4)

    log(f"phase 1/2: training on the adding problem, T={args.T}, hidden {args.hidden}, {args.steps} steps each")
    trained, results = {}, {}
    for name, k in zip(NAMES, jax.random.split(k_train, len(NAMES))):
        trained[name], results[name] = fit(build(name, args.hidden, args.T), args, k, name, tag="cell_vs_hidden/train")
        log(f"{name}: test MSE {results[name]['final_test_mse']:.4f} (trivial {BASELINE_MSE:.3f})")

    log("phase 2/2: dynamics of the trained networks (dynamics.report)")
    probe_xs, _ = adding_batch(k_probe, args.probe, args.T)
    # Lyapunov drive: the task's input statistics (random values, no markers) over a longer stream.
    lyap_xs = jnp.stack([jax.random.uniform(k_lyap, (args.lyap_steps,)), jnp.zeros(args.lyap_steps)], axis=-1)
    reports = {}
    for name, k in zip(NAMES, jax.random.split(k_analyse, len(NAMES))):
        phase, net, params = time.perf_counter(), build(name, args.hidden, args.T), trained[name]
        if name == "lstm2":
            net, params, results[name]["torch"] = through_torch(net, params, probe_xs)
        reports[name] = analyse(name, net, params, args, probe_xs, lyap_xs, k)
        results[name].update(record_of(reports[name], args, back))
        log(f"{name}: analysed in {time.perf_counter() - phase:.1f} s")

    figures = _figures(reports, args)
    for filename, fig in figures.items():
        fig.savefig(out / filename, dpi=110)

    total = time.perf_counter() - start
    metrics = {
        "task": {"name": "adding problem", "T": args.T, "hidden": args.hidden, "baseline_mse": BASELINE_MSE},
        "steps_back": back,
        "perturbation_t0": T0,
        "models": results,
        "figures": sorted(figures),
        "seconds": total,
    }
    record = _common.write_metrics(out, "cell_vs_hidden", metrics, args)
    rows = summary_rows(results, back)
    print("\n".join(rows), flush=True)
    (out / "report.md").write_text(report(record, rows, back))
    log(f"wrote {out / 'report.md'} ({total:.0f} s in all)")
    return record


def _figures(reports: dict[str, dyn.Report], args) -> dict:
    """The one-layer models side by side, and the 2-layer LSTM's own figures (``deep_*.png``)."""
    single = {name: rep for name, rep in reports.items() if name != "lstm2"}

    def curves(attr: str, label: str) -> dict:
        return {
            label.format(model=NAMES[n], field=f): c for n, rep in single.items() for f, c in getattr(rep, attr).items()
        }

    taus = {
        f"{NAMES[n]} ({'forget gate f' if f == 'c' else 'update gate u'})": t
        for n, rep in single.items()
        for f, t in rep.timescales.items()
    }
    lstm = single["lstm"]
    points = lstm.fixed_points
    if points is not None and points.q.shape[0]:  # the eigen-timescales at the most precise point (the first)
        modes = np.asarray(points.linearization.time_constants[0])
        taus["LSTM (Jacobian eigenvalues at its fixed point)"] = modes[np.isfinite(modes)]
    figures = {
        "gradient_flow.png": plot.gradient_flow(
            curves("gradient", "{model} {field}"), title="|| d y_T / d s_t ||, relative to the gradient at T"
        ),
        "perturbation.png": plot.perturbation_decay(
            curves("retention", "{model}: kick {field}"),
            T0,
            normalise=False,
            title="Retained fraction of a kick at t0",
        ),
        "lyapunov.png": plot.lyapunov_spectrum(
            {NAMES[n]: rep.lyapunov for n, rep in single.items()}, title="Lyapunov spectra (driven by the task)"
        ),
        "timescales.png": plot.timescales(
            {k: v for k, v in taus.items() if len(v)}, horizon=args.T, title="Memory timescales"
        ),
    }
    if points is not None and points.q.shape[0]:
        figures["slow_points.png"] = plot.fixed_points(
            lstm.trajectories, points, title="LSTM slow points at x = (0.5, 0)"
        )
    if "lstm2" in reports:
        deep = plot.report(reports["lstm2"], label="2-layer LSTM")
        figures.update({f"deep_{name}": fig for name, fig in deep.items()})
    return figures


def _layers(r: dict) -> list[str]:
    """The field-name prefixes of a model's layers: ``[""]`` for one cell, ``["0.", "1."]`` for a stack."""
    return sorted({f[: f.rindex(".") + 1] for f in r["fields"]}) if "." in r["fields"][0] else [""]


def summary_rows(results: dict, back: int) -> list[str]:
    """The summary table, as Markdown rows: one per model, one per layer for the stack."""
    kept = results["lstm"]["retention_at_steps_after"]["h"]
    after = "50" if "50" in kept else max(kept, key=int)
    head = (
        f"| model | test MSE | grad c / h at {back} back | ‖dc_T/dc_t‖ / ‖dh_T/dh_t‖ at {back} back "
        f"| kick kept after {after}: c / h | gate tau: median / max | max Lyapunov | gradient horizon |"
    )
    rows = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for name, r in results.items():
        g, j, kept = r["gradient_at_steps_back"], r["jacobian_product_at_steps_back"], r["retention_at_steps_after"]
        horizon = f"> {len(r['gradient_total']) - 1}" if r["gradient_horizon"] is None else r["gradient_horizon"]
        layers = _layers(r)
        for i, at in enumerate(layers):
            taus = r.get("gate_timescales", {}).get(at + ("c" if name.startswith("lstm") else "h"))
            tau = "-" if taus is None else f"{taus['median']:.1f} / {taus['max']:.0f}"
            label = NAMES[name] + (f", layer {i + 1}" if len(layers) > 1 else "")
            rows.append(
                f"| {label} | {r['final_test_mse']:.4f} | {_pair(g.get(at + 'c'), g[at + 'h'])} "
                f"| {_pair(j.get(at + 'c'), j[at + 'h'])} "
                f"| {_pair(kept.get(at + 'c', {}).get(after), kept[at + 'h'][after])} "
                f"| {tau} | {r['lyapunov']['max']:.3f} | {horizon} |"
            )
    return rows


def _steps(tau: float | None) -> str:
    return "- (no decaying mode)" if tau is None else f"{tau:.0f} steps"


def _pair(c: float | None, h: float) -> str:
    return f"{h:.2e}" if c is None else f"{c:.2e} / {h:.2e}"


def report(record: dict, rows: list[str], back: int) -> str:
    """``report.md``: the question, the table, the figures and how the numbers were made."""
    task, models = record["task"], record["models"]
    lstm = models["lstm"]
    lines = [
        "# Cell state versus hidden state",
        "",
        f"Adding problem, T = {task['T']}, hidden size {task['hidden']} for every model, "
        f"{record['args']['steps']} Adam steps each (trivial MSE {task['baseline_mse']:.3f}). "
        f"Run time {record['seconds']:.0f} s on {record['machine']['cpu_count']} CPU cores "
        f"(jax {record['machine']['jax']}, {record['machine']['backend']}).",
        "",
        *rows,
        "",
        f"- **grad c / h**: ``|| d y_T / d c_t ||`` and ``|| d y_T / d h_t ||`` {back} steps before the read-out "
        "``y_T``, relative to the whole gradient at ``T``, mean over probe sequences (one reverse pass each, "
        "`recurrax.dynamics.gradient_flow`).",
        "- **‖dc_T/dc_t‖ / ‖dh_T/dh_t‖**: spectral norms of the Jacobian products along one sequence "
        "(`jacobian_product_norms`).",
        f"- **kick kept**: distance from the clean run 50 steps after a kick of size 0.01 to ``c`` or ``h`` at "
        f"t0 = {record['perturbation_t0']}, divided by 0.01 (`perturbation_response`).",
        "- **gate tau**: ``-1 / log mean f`` per unit over the probe sequences (LSTM forget gate, GRU "
        "update gate; `gate_timescales`).",
        "- **max Lyapunov**: the largest exponent per step, driven by the task's inputs (`lyapunov_spectrum`).",
        f"- **gradient horizon**: steps back until the whole read-out gradient falls below {GRADIENT_FLOOR:g} of "
        "its value at ``T`` (a 0 in the table is below float32's range).",
        "",
        "## Gradient flow",
        "",
        "![gradient flow](gradient_flow.png)",
        "",
        "## Perturbation retention",
        "",
        "![perturbation](perturbation.png)",
        "",
        "## Timescales",
        "",
        "![timescales](timescales.png)",
        "",
        "## Lyapunov spectra",
        "",
        "![lyapunov](lyapunov.png)",
        "",
    ]
    if "slow_points.png" in record["figures"]:
        sp = lstm["slow_points"]
        kinds = {k: sp["stability"].count(k) for k in sorted(set(sp["stability"]))}
        lines += [
            "## LSTM slow points",
            "",
            f"{sp['found']} distinct points with speed q < {SLOW_Q:g} from {sp['starts']} starts on the probe "
            f"trajectories, at the resting input (0.5, 0); {sp['fixed']} of them fixed points (q < {FIXED_Q:g}), "
            f"the others slow points. Stability of their linearisations: {kinds}. The slowest decaying mode "
            f"of the most precise point has a time constant of {_steps(sp['fixed_point_time_constant'])}. "
            + (
                f"As a set (`dynamics.slow_manifold`) their most common number of eigenvalues near modulus 1 is "
                f"{sp['manifold_dimension']}, and their first principal components hold "
                f"{', '.join(f'{e:.1%}' for e in sp['explained'])} of their variance (a line attractor shows as "
                "1 and nearly all on the first)."
                if sp["manifold_dimension"] is not None
                else ""
            ),
            "",
            "![slow points](slow_points.png)",
            "",
        ]
    if "lstm2" in models:
        deep = models["lstm2"]
        torch = deep.get("torch", {})
        how = (
            f"exported with `to_torch` to `{torch['module']}` and converted back with `from_torch` (torch and "
            f"recurrax outputs differ by at most {torch['max_abs_output_difference']:.1e}); the analysed "
            "network is the converted one"
            if torch.get("converted")
            else torch.get("why", "")
        )
        lines += [
            "## A 2-layer LSTM, per layer",
            "",
            f"Two stacked LSTMs of {task['hidden']} units (`rx.stacked`, the layout of "
            f"`torch.nn.LSTM(num_layers=2)`), from the chrono initialisation (forget biases `log U(1, T - 1)`; "
            "with the default one, half the seeds tried stayed at the trivial error), trained the same way; "
            f"{how}. `dynamics.report` analyses the stack "
            "as one cell whose state is the tuple of the layers' states, so every curve is per layer and field "
            "(`0.c` is the first layer's cell state, `1.h` the second layer's hidden state, which the read-out "
            "sees).",
            "",
            *[f"![{name}]({name})" for name in record["figures"] if name.startswith("deep_")],
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
