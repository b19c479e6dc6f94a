"""What does an LSTM's cell state ``c`` carry that its hidden state ``h`` does not? Measured, on the adding problem.

An LSTM, a GRU and an Elman RNN of the same hidden size are trained on the adding problem (two
marked numbers among T random ones; the target is their sum; ``long_memory.fit``: ``recurrax.scan`` +
optax, explicit keys), then taken apart with :mod:`recurrax.dynamics`:

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

MODELS = {"lstm": rx.lstm, "gru": rx.gru, "elman": rx.elman}
NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman"}
SLOW_Q, FIXED_Q = 1e-4, 1e-10  # speed thresholds of slow points and of (numerically exact) fixed points
GRADIENT_FLOOR = 1e-6  # the gradient horizon: steps back until the read-out gradient falls below this fraction


def log(msg: str) -> None:
    print(f"[cell_vs_hidden] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- analysis


def readout(cell: rx.Cell, params, state) -> jax.Array:
    """The prediction from a state: the linear read-out of ``h`` that ``long_memory.fit`` trains."""
    return cell.output(state) @ params["head"]["w"] + params["head"]["b"]


def gradient_flow(cell: rx.Cell, params, xs: jax.Array) -> dict[str, np.ndarray]:
    """Mean over sequences of ``|| d y_T / d s_t ||`` per field, relative to the whole gradient at ``T``."""

    def one(xs):
        return dyn.gradient_flow(cell, params["cell"], xs, lambda s: readout(cell, params, s))

    flow = jax.jit(jax.vmap(one))(xs)
    scale = float(flow.total[:, -1].mean())
    return {field: np.asarray(norms.mean(0)) / scale for field, norms in flow.norms._asdict().items()}


def product_norms(cell: rx.Cell, params, xs: jax.Array) -> dict[str, np.ndarray]:
    """``|| d s_T / d s_t ||_2`` along one sequence: the diagonal field blocks (``c.c``, ``h.h``) and the whole."""
    norms = jax.jit(lambda xs: dyn.jacobian_product_norms(cell, params["cell"], xs))(xs)
    out = {f"{f}.{f}": np.asarray(getattr(getattr(norms.blocks, f), f)) for f in norms.blocks._fields}
    return {**out, "total": np.asarray(norms.total)}


def retention(cell: rx.Cell, params, xs: jax.Array, t0: int, scale: float, key: jax.Array) -> dict[str, np.ndarray]:
    """Mean retained fraction of a kick of size ``scale`` in a random direction, to each field at ``t0``."""
    state0 = cell.initial_state(params["cell"], ())
    out = {}
    for field in state0._fields:
        size = getattr(state0, field).shape[-1]
        key, k = jax.random.split(key)
        directions = jax.random.normal(k, (xs.shape[0], size))
        directions = scale * directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)

        def one(xs, d, field=field):
            kick = dyn.field_perturbation(state0, field, d)
            return dyn.perturbation_response(cell, params["cell"], xs, kick, t0=t0).total

        distance = jax.jit(jax.vmap(one))(xs, directions)
        out[field] = np.asarray(distance.mean(0)) / scale
    return out


def gate_taus(cell: rx.Cell, params, xs: jax.Array) -> np.ndarray | None:
    """Each unit's retention-gate timescale ``-1 / log mean f`` over the test sequences (``None`` for Elman)."""
    if cell.name not in ("lstm", "gru"):
        return None

    def one(xs):
        return dyn.gate_timescales(cell, params["cell"], xs).gate

    gates = jax.jit(jax.vmap(one))(xs)  # (B, T, H)
    return np.asarray(dyn.gate_tau(gates.mean((0, 1))))


def lyapunov(cell: rx.Cell, params, xs: jax.Array, burn_in: int) -> dyn.LyapunovSpectrum:
    """The full spectrum along one long input stream."""
    return jax.jit(lambda xs: dyn.lyapunov_spectrum(cell, params["cell"], xs, burn_in=burn_in, on_nonfinite="flag"))(xs)


def slow_points(cell: rx.Cell, params, xs: jax.Array, args, key: jax.Array) -> tuple[dyn.FixedPoints, np.ndarray]:
    """Fixed/slow points at the resting input ``(0.5, 0)`` (a mean value, no marker), started along trajectories."""
    states = jax.vmap(lambda xs: dyn.trajectory(cell, params["cell"], xs))(xs)
    runs = dyn.flatten(states)  # (B, T + 1, S)
    flat = runs.reshape(-1, runs.shape[-1])
    pick = jax.random.choice(key, flat.shape[0], (args.fp_starts,), replace=False)
    starts = dyn.unflatten(cell.initial_state(params["cell"], ()), flat[pick])
    found = dyn.find_fixed_points(
        cell, params["cell"], jnp.asarray([0.5, 0.0]), starts, num_steps=args.fp_steps, tol_q=SLOW_Q, tol_unique=0.05
    )
    return found, np.asarray(runs)


# ------------------------------------------------------------------------------------------- report


def _slowest_decay(time_constants) -> float | None:
    """The largest finite time constant (``inf`` marks modes that do not decay)."""
    finite = np.asarray(time_constants)[np.isfinite(time_constants)]
    return float(finite.max()) if finite.size else None


def at(curve: np.ndarray, steps_back: int) -> float:
    """A ``(T + 1,)`` boundary-indexed curve's value ``steps_back`` steps before ``T``."""
    return float(curve[len(curve) - 1 - steps_back])


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
    t0 = 1  # perturbations land just after the start, so retention is followed over the whole sequence
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    key = jax.random.key(args.seed)
    k_train, k_probe, k_lyap, k_kick, k_fp = jax.random.split(key, 5)

    log(f"phase 1/2: training on the adding problem, T={args.T}, hidden {args.hidden}, {args.steps} steps each")
    trained, results = {}, {}
    for name, k in zip(MODELS, jax.random.split(k_train, len(MODELS))):
        trained[name], results[name] = fit(MODELS[name](args.hidden), args, k, name, tag="cell_vs_hidden/train")
        log(f"{name}: test MSE {results[name]['final_test_mse']:.4f} (trivial {BASELINE_MSE:.3f})")

    log("phase 2/2: dynamics of the trained networks")
    probe_xs, _ = adding_batch(k_probe, args.probe, args.T)
    # Lyapunov drive: the task's input statistics (random values, no markers) over a longer stream.
    lyap_xs = jnp.stack([jax.random.uniform(k_lyap, (args.lyap_steps,)), jnp.zeros(args.lyap_steps)], axis=-1)
    curves: dict[str, dict] = {"gradient": {}, "retention": {}, "lyapunov": {}, "taus": {}}
    fixed = None
    for name in MODELS:
        cell, params, r = MODELS[name](args.hidden), trained[name], results[name]
        phase = time.perf_counter()
        flow = gradient_flow(cell, params, probe_xs)
        products = product_norms(cell, params, probe_xs[0])
        kept = retention(cell, params, probe_xs, t0, 1e-2, k_kick)
        taus = gate_taus(cell, params, probe_xs)
        spectrum = lyapunov(cell, params, lyap_xs, args.lyap_burn_in)
        r["gradient"] = {field: curve.tolist() for field, curve in flow.items()}
        r["gradient_at_steps_back"] = {field: at(curve, back) for field, curve in flow.items()}
        whole = np.sqrt(sum(curve**2 for curve in flow.values()))[::-1]  # by steps back
        below = np.flatnonzero(whole < GRADIENT_FLOOR)
        r["gradient_horizon"] = int(below[0]) if below.size else None
        r["jacobian_product_at_steps_back"] = {block: at(curve, back) for block, curve in products.items()}
        r["retention"] = {field: curve[t0:].tolist() for field, curve in kept.items()}
        r["retention_at_steps_after"] = {
            field: {str(k): float(curve[t0 + k]) for k in (10, 50, args.T - t0) if t0 + k <= args.T}
            for field, curve in kept.items()
        }
        if taus is not None:
            r["gate_timescales"] = {
                "gate": "forget gate f" if name == "lstm" else "update gate u",
                "median": float(np.median(taus)),
                "max": float(np.max(taus)),
                "units_over_T": int(np.sum(taus > args.T)),
                "per_unit": sorted(taus.tolist(), reverse=True),
            }
        r["lyapunov"] = {
            "exponents": np.asarray(spectrum.exponents).tolist(),
            "max": float(spectrum.exponents[0]),
            "finite": bool(spectrum.finite),
            "steps": args.lyap_steps,
            "burn_in": args.lyap_burn_in,
        }
        for field, curve in flow.items():
            curves["gradient"][f"{NAMES[name]} {field}"] = curve
        for field, curve in kept.items():
            curves["retention"][f"{NAMES[name]}: kick {field}"] = np.concatenate([np.zeros(t0), curve[t0:]])
        curves["lyapunov"][NAMES[name]] = spectrum.exponents
        if taus is not None:
            curves["taus"][f"{NAMES[name]} ({r['gate_timescales']['gate']})"] = taus
        if name == "lstm":
            fixed, fixed_traj = slow_points(cell, params, probe_xs, args, k_fp)
            lin = fixed.linearization
            r["slow_points"] = {
                "input": [0.5, 0.0],
                "found": int(fixed.q.shape[0]),
                "starts": fixed.num_candidates,
                "converged": fixed.num_converged,
                "q": np.asarray(fixed.q).tolist(),
                "fixed": int(np.sum(np.asarray(fixed.q) < FIXED_Q)),
                "stability": [dyn.STABILITY_NAMES[int(s)] for s in np.asarray(lin.stability)],
                "slowest_time_constant": [float(t[0]) for t in np.asarray(lin.time_constants)],
                "fixed_point_time_constant": _slowest_decay(lin.time_constants[0]) if fixed.q.shape[0] else None,
            }
            if fixed.q.shape[0]:  # the eigen-timescales at the most precise point (the first)
                modes = np.asarray(lin.time_constants[0])
                curves["taus"]["LSTM (Jacobian eigenvalues at its fixed point)"] = modes[np.isfinite(modes)]
        log(f"{name}: analysed in {time.perf_counter() - phase:.1f} s")

    figures = {
        "gradient_flow.png": plot.gradient_flow(
            curves["gradient"], title="|| d y_T / d s_t ||, relative to the gradient at T"
        ),
        "perturbation.png": plot.perturbation_decay(
            curves["retention"], t0, normalise=False, title="Retained fraction of a kick at t0"
        ),
        "lyapunov.png": plot.lyapunov_spectrum(curves["lyapunov"], title="Lyapunov spectra (driven by the task)"),
        "timescales.png": plot.timescales(
            {k: v for k, v in curves["taus"].items() if len(v)}, horizon=args.T, title="Memory timescales"
        ),
    }
    if fixed is not None and fixed.q.shape[0]:
        figures["slow_points.png"] = plot.fixed_points(
            fixed_traj,
            dyn.flatten(fixed.states),
            fixed.linearization.stability,
            title="LSTM slow points at x = (0.5, 0)",
        )
    for filename, fig in figures.items():
        fig.savefig(out / filename, dpi=110)

    total = time.perf_counter() - start
    metrics = {
        "task": {"name": "adding problem", "T": args.T, "hidden": args.hidden, "baseline_mse": BASELINE_MSE},
        "steps_back": back,
        "perturbation_t0": t0,
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


def summary_rows(results: dict, back: int) -> list[str]:
    """The summary table, as Markdown rows."""
    kept = next(iter(results.values()))["retention_at_steps_after"]["h"]
    after = "50" if "50" in kept else max(kept, key=int)
    head = (
        f"| model | test MSE | grad c / h at {back} back | ||dc_T/dc_t|| / ||dh_T/dh_t|| at {back} back "
        f"| kick kept after {after}: c / h | gate tau: median / max | max Lyapunov | gradient horizon |"
    )
    rows = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for name, r in results.items():
        g, j, kept = r["gradient_at_steps_back"], r["jacobian_product_at_steps_back"], r["retention_at_steps_after"]
        taus = r.get("gate_timescales")
        tau = "-" if taus is None else f"{taus['median']:.1f} / {taus['max']:.0f}"
        horizon = f"> {len(r['gradient']['h']) - 1}" if r["gradient_horizon"] is None else r["gradient_horizon"]
        rows.append(
            f"| {NAMES[name]} | {r['final_test_mse']:.4f} | {_pair(g.get('c'), g['h'])} "
            f"| {_pair(j.get('c.c'), j['h.h'])} | {_pair(kept.get('c', {}).get(after), kept['h'][after])} "
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
        "- **||dc_T/dc_t|| / ||dh_T/dh_t||**: spectral norms of the Jacobian products along one sequence "
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
            f"of the most precise point has a time constant of {_steps(sp['fixed_point_time_constant'])}.",
            "",
            "![slow points](slow_points.png)",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
