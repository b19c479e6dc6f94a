"""``report``: the flagship example's analysis of one network as one call, returning numbers per state field.

What an LSTM's ``c`` carries that its ``h`` does not is answered by five measurements on a trained network,
each averaged over a batch of probe sequences: how far back the gradient of a loss reaches through each
field, the Jacobian products of each field's block, how much of a small kick to each field is left later,
the retention-gate timescales, and the Lyapunov spectrum (plus, given a resting input, the slow points and
whether they form a line attractor). :func:`report` runs them all (each jitted and vmapped) and returns a
:class:`Report` of NumPy arrays keyed by field name (``"h"``, ``"c"``; ``"0.c"``, ``"1.h"`` for a stack's
layers, see :func:`recurrax.dynamics.field_names`); :func:`recurrax.plot.report` draws its figures.

It is a driver for concrete values, not a function to transform: call it outside ``jit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.fixed_points import STABILITY_NAMES, FixedPoints, SlowManifold, find_fixed_points, slow_manifold
from recurrax.dynamics.gradient_flow import gradient_flow, jacobian_product_norms
from recurrax.dynamics.lyapunov import lyapunov_spectrum
from recurrax.dynamics.perturbation import field_perturbation, perturbation_response
from recurrax.dynamics.spectrum import kaplan_yorke_dimension, ks_entropy
from recurrax.dynamics.timescales import RETAINED, gate_tau, gates_over, unsupported
from recurrax.dynamics.trajectory import trajectory


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`report` measured on one network; curves are indexed by the boundary ``t = 0..T``.

    Attributes:
      fields: the state fields' names (:func:`recurrax.dynamics.field_names`), in the flat state's order.
      gradient: ``{field: (T + 1,)}``, the mean over the probe sequences of ``|| dL / d s_t ||`` in that field,
        divided by the mean whole gradient at ``T`` (``gradient_flow``).
      gradient_total: ``(T + 1,)``, the same for the whole state.
      products: ``{field: (T + 1,)}``, ``|| d s_T / d s_t ||_2`` of each field's diagonal block (``"c"`` is
        ``|| d c_T / d c_t ||``), and ``"total"`` for the whole state, along the first probe sequence.
      retention: ``{field: (T + 1,)}``, the mean distance from the clean run of a run kicked by ``kick`` in a
        random direction of that field at ``t0``, divided by ``kick``: the retained fraction (zero before ``t0``).
      timescales: ``{field: (H,)}``, each unit's retention-gate timescale ``-1 / log mean g`` (steps, slowest
        first) for the field the gate keeps (the LSTM's ``c``, the GRU's and MGU's ``h``, the LRU's ``x``);
        empty for cells without a retention gate (``notes`` says why).
      lyapunov: ``(k,)``, the Lyapunov exponents per step along the Lyapunov drive, descending.
      lyapunov_finite: whether that run stayed finite (when not, the exponents are not a spectrum).
      kaplan_yorke, ks_entropy: the spectrum's Kaplan-Yorke dimension and KS entropy (nats per step).
      fixed_points: the slow points at the resting input, when one was given, else ``None``.
      slow_manifold: their :func:`~recurrax.dynamics.slow_manifold` summary, ``None`` without points.
      trajectories: ``(B, T + 1, S)`` flat probe trajectories, kept when slow points were searched (for the figure).
      t0, kick: where and how hard the perturbations landed.
      notes: analyses that could not run on this network, and why.
    """

    fields: tuple[str, ...]
    gradient: dict[str, np.ndarray]
    gradient_total: np.ndarray
    products: dict[str, np.ndarray]
    retention: dict[str, np.ndarray]
    timescales: dict[str, np.ndarray]
    lyapunov: np.ndarray
    lyapunov_finite: bool
    kaplan_yorke: float
    ks_entropy: float
    fixed_points: FixedPoints | None
    slow_manifold: SlowManifold | None
    trajectories: np.ndarray | None
    t0: int
    kick: float
    notes: tuple[str, ...] = ()

    @property
    def num_steps(self) -> int:
        """``T``, the probe sequences' length."""
        return len(self.gradient_total) - 1

    def gradient_at(self, steps_back: int) -> dict[str, float]:
        """``{field: gradient}`` ``steps_back`` steps before ``T``, ``0 <= steps_back <= T``."""
        at = self.num_steps - _within("Report.gradient_at", "steps_back", steps_back, self.num_steps)
        return {f: float(curve[at]) for f, curve in self.gradient.items()}

    def products_at(self, steps_back: int) -> dict[str, float]:
        """``{field or "total": || d s_T / d s_t ||}`` ``steps_back`` steps before ``T``, ``0 <= steps_back <= T``."""
        at = self.num_steps - _within("Report.products_at", "steps_back", steps_back, self.num_steps)
        return {f: float(curve[at]) for f, curve in self.products.items()}

    def retained_after(self, steps: int) -> dict[str, float]:
        """``{field: retained fraction}`` ``steps`` steps after the kick, ``0 <= steps <= T - t0``."""
        at = self.t0 + _within("Report.retained_after", "steps", steps, self.num_steps - self.t0)
        return {f: float(curve[at]) for f, curve in self.retention.items()}

    def gradient_horizon(self, floor: float = 1e-6) -> int | None:
        """Steps back until the whole gradient first falls below ``floor`` (relative to ``T``); ``None``: never."""
        below = np.flatnonzero(self.gradient_total[::-1] < floor)
        return int(below[0]) if below.size else None

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready Python numbers and lists (fixed points summarised)."""
        out: dict[str, Any] = {
            "fields": list(self.fields),
            "gradient": {f: c.tolist() for f, c in self.gradient.items()},
            "gradient_total": self.gradient_total.tolist(),
            "products": {f: c.tolist() for f, c in self.products.items()},
            "retention": {f: c.tolist() for f, c in self.retention.items()},
            "timescales": {f: t.tolist() for f, t in self.timescales.items()},
            "lyapunov": {
                "exponents": self.lyapunov.tolist(),
                "finite": self.lyapunov_finite,
                "kaplan_yorke": self.kaplan_yorke,
                "ks_entropy": self.ks_entropy,
            },
            "t0": self.t0,
            "kick": self.kick,
            "notes": list(self.notes),
        }
        if self.fixed_points is not None:
            out["fixed_points"] = self.fixed_points_summary()
        return out

    def fixed_points_summary(self) -> dict[str, Any] | None:
        """The slow points as JSON-ready numbers (count, speeds, stability, slowest time constants, manifold)."""
        points = self.fixed_points
        if points is None:
            return None
        lin, manifold = points.linearization, self.slow_manifold
        return {
            "found": int(points.q.shape[0]),
            "starts": points.num_candidates,
            "converged": points.num_converged,
            "q": np.asarray(points.q).tolist(),
            "stability": [STABILITY_NAMES[int(s)] for s in np.asarray(lin.stability)],
            "slowest_time_constant": [float(t[0]) for t in np.asarray(lin.time_constants)],
            "manifold_dimension": None if manifold is None else int(manifold.dimension),
            "explained": None if manifold is None else np.asarray(manifold.explained)[:3].tolist(),
        }


def _within(fn: str, arg: str, value: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= high:
        raise ValueError(f"{fn}: `{arg}` must be an int in [0, {high}], got {value!r}.")
    return int(value)


@_flat.on_steps
def report(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    key: Array,
    loss_fn: Callable[[State], Array] | None = None,
    state: State | None = None,
    t0: int = 1,
    kick: float = 1e-2,
    lyapunov_xs: Array | None = None,
    burn_in: int | None = None,
    fixed_point_input: Array | None = None,
    fixed_point_starts: int = 64,
    fixed_point_steps: int = 1000,
    tol_q: float = 1e-4,
    tol_unique: float = 0.05,
) -> Report:
    """Gradient flow, Jacobian products, perturbation retention, gate timescales and the Lyapunov spectrum of a
    network (a cell, or a layer with a one-step form such as a ``stacked`` network), per state field.

    Args:
      cell, params: the network and its params.
      xs: probe sequences ``(B, T, I)``; every curve is their mean.
      key: draws the kick directions and the slow-point starts.
      loss_fn: ``final_state -> scalar`` whose gradient is followed back, e.g. the trained read-out's error;
        ``sum(cell.output(final))`` when ``None``.
      state: the initial state of every run (leaves ``(n,)``); zeros when ``None``.
      t0, kick: the boundary ``0 <= t0 < T`` and the size of the kicks.
      lyapunov_xs: the drive ``(T', I)`` of the Lyapunov spectrum; the first probe sequence when ``None``.
      burn_in: steps of that drive before averaging; a fifth of it when ``None``.
      fixed_point_input: a resting input ``(I,)`` at which to search for slow points, started from states on the
        probe trajectories; no search when ``None``.
      fixed_point_starts, fixed_point_steps, tol_q, tol_unique: the search's starts, optimiser steps, speed
        threshold and de-duplication distance (:func:`~recurrax.dynamics.find_fixed_points`).

    Returns:
      A :class:`Report`.
    """
    fn = "dynamics.report"
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"{fn}: `xs` must be a batch of probe sequences (B, T, I), got shape {tuple(xs.shape)}.")
    _flat.check_inputs(fn, cell, params, xs[0])
    num_steps = xs.shape[1]
    if isinstance(t0, bool) or not isinstance(t0, int | np.integer) or not 0 <= t0 < num_steps:
        raise ValueError(f"{fn}: `t0` must be an int in [0, T={num_steps}), got {t0!r}.")
    if not kick > 0:
        raise ValueError(f"{fn}: `kick` must be positive, got {kick!r}.")
    drive = xs[0] if lyapunov_xs is None else _flat.check_inputs(fn, cell, params, lyapunov_xs, "lyapunov_xs")
    burn_in = drive.shape[0] // 5 if burn_in is None else burn_in
    if isinstance(burn_in, bool) or not isinstance(burn_in, int | np.integer) or not 0 <= burn_in < drive.shape[0]:
        raise ValueError(
            f"{fn}: `burn_in` must be an int in [0, {drive.shape[0]}) (the Lyapunov drive's steps), got {burn_in!r}."
        )
    if fixed_point_input is not None:
        fixed_point_input = _flat.check_inputs(fn, cell, params, fixed_point_input, "fixed_point_input", sequence=False)
        _flat.check_count(fn, "fixed_point_starts", fixed_point_starts, low=1)
    state = _flat.initial_state(fn, cell, params, state)
    names = tuple(_flat.field_names(state))
    loss_fn = (lambda s: jnp.sum(cell.output(s))) if loss_fn is None else loss_fn
    k_kick, k_fp = jax.random.split(key)
    notes: list[str] = []

    flow = jax.jit(jax.vmap(lambda x: gradient_flow(cell, params, x, loss_fn, state)))(xs)
    scale = float(jnp.mean(flow.total[:, -1]))
    if not scale > 0:
        raise ValueError(f"{fn}: the gradient of `loss_fn` at the final state is {scale}; it must depend on the state.")
    gradient = {f: np.asarray(n.mean(0)) / scale for f, n in zip(names, jax.tree.leaves(flow.norms))}

    norms = jax.jit(lambda x: jacobian_product_norms(cell, params, x, state))(xs[0])
    blocks = jax.tree.leaves(norms.blocks)  # out-field major: block (i, i) is leaf i * n + i
    products = {f: np.asarray(blocks[i * len(names) + i]) for i, f in enumerate(names)}
    products["total"] = np.asarray(norms.total)

    kicks = []  # per field, B perturbations shaped like the state; stacked so one compiled call runs them all
    for f, leaf, size, k in zip(
        names, jax.tree.leaves(state), _flat.sizes(state), jax.random.split(k_kick, len(names))
    ):
        # Uniform on the field's sphere in the real view: a complex field is kicked in Re and Im alike.
        directions = jax.random.normal(k, (xs.shape[0], size), jnp.real(leaf).dtype)
        directions = _flat.from_real_view(kick * directions / jnp.linalg.norm(directions, axis=-1, keepdims=True), leaf)
        kicks.append(jax.vmap(lambda d, f=f: field_perturbation(state, f, d))(directions))
    kicks = jax.tree.map(lambda *leaves: jnp.stack(leaves), *kicks)  # leaves (F, B, n)

    def kicked(x, perturbation):
        return perturbation_response(cell, params, x, perturbation, t0=t0, state=state).total

    distances = jax.jit(jax.vmap(jax.vmap(kicked), in_axes=(None, 0)))(xs, kicks)  # (F, B, T + 1)
    retention = {f: np.asarray(d.mean(0)) / kick for f, d in zip(names, distances)}

    timescales = _timescales(cell, params, xs, state, notes)

    spectrum = jax.jit(lambda x: lyapunov_spectrum(cell, params, x, state, burn_in=burn_in, on_nonfinite="flag"))(drive)

    points = manifold = runs = None
    if fixed_point_input is not None:
        states = jax.jit(jax.vmap(lambda x: trajectory(cell, params, x, state)))(xs)
        runs = np.asarray(_flat.flatten(states))
        flat = runs.reshape(-1, runs.shape[-1])
        pick = jax.random.choice(k_fp, flat.shape[0], (min(fixed_point_starts, flat.shape[0]),), replace=False)
        starts = _flat.unflatten(cell.initial_state(params, ()), jnp.asarray(flat)[pick])
        points = find_fixed_points(
            cell, params, fixed_point_input, starts, num_steps=fixed_point_steps, tol_q=tol_q, tol_unique=tol_unique
        )
        if points.q.shape[0]:
            manifold = jax.tree.map(np.asarray, slow_manifold(points))
        else:
            notes.append(f"no slow point with q < {tol_q:g} from {points.num_candidates} starts")

    return Report(
        fields=names,
        gradient=gradient,
        gradient_total=np.asarray(flow.total.mean(0)) / scale,
        products=products,
        retention=retention,
        timescales=timescales,
        lyapunov=np.asarray(spectrum.exponents),
        lyapunov_finite=bool(spectrum.finite),
        kaplan_yorke=float(kaplan_yorke_dimension(spectrum.exponents)),
        ks_entropy=float(ks_entropy(spectrum.exponents)),
        fixed_points=points,
        slow_manifold=manifold,
        trajectories=runs,
        t0=t0,
        kick=float(kick),
        notes=tuple(notes),
    )


def _timescales(cell: Cell, params: Params, xs: Array, state: State, notes: list[str]) -> dict[str, np.ndarray]:
    """``{kept field: unit timescales, slowest first}`` for each gated layer; the others go to ``notes``."""
    gates = jax.jit(jax.vmap(lambda x: gates_over(cell, params, x, state, skip=True)))(xs)
    out: dict[str, np.ndarray] = {}

    def walk(c: Cell, p: Params, g: Any, prefix: str) -> None:
        parts = _flat.stack_parts(c)
        if parts is not None:
            for i, (layer, layer_params, layer_gates) in enumerate(zip(parts[0], p, g)):
                walk(layer, layer_params, layer_gates, f"{prefix}{i}.")
        elif g is None:
            notes.append(f"no gate timescales for {prefix}{c.name}: {unsupported(c, p)}")
        else:
            out[prefix + RETAINED[c.name]] = np.sort(np.asarray(gate_tau(g.mean((0, 1)))))[::-1]

    walk(cell, params, gates, "")
    return out
