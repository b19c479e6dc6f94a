"""Figures for :mod:`recurrax.dynamics` results (optional: ``pip install recurrax[plot]``).

Each function draws on the matplotlib ``Axes`` it is given, or on a new ``Figure`` (made without
``pyplot``, so nothing global changes), and returns that figure; ``fig.savefig(path)`` writes it.
Curves are passed as ``{label: values}`` so models and state fields can share one plot, or as the
result of the same-named :mod:`recurrax.dynamics` function, e.g. ``plot.gradient_flow(dyn.gradient_flow(...))``
(one curve per state field); a mapping's values may be such results too (``{"seed 0": spectrum, ...}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from recurrax.dynamics import _flat
from recurrax.dynamics.fixed_points import STABILITY_NAMES, FixedPoints
from recurrax.dynamics.gradient_flow import GradientFlow, ProductNorms
from recurrax.dynamics.lyapunov import LyapunovSpectrum
from recurrax.dynamics.perturbation import PerturbationResponse
from recurrax.dynamics.report import Report
from recurrax.dynamics.timescales import GateTimescales

_STYLE = {"stable": ("o", "tab:blue"), "unstable": ("X", "tab:red"), "saddle": ("^", "tab:orange")}


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``(figure, axes)``: ``ax`` and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("recurrax.plot needs matplotlib: pip install 'recurrax[plot]'.") from err
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _fields(state: Any) -> dict[str, Any]:
    """``{field name: leaf}`` of a state (``"h"``, ``"c"``; ``"1.c"`` in a stack, see ``dynamics.field_names``)."""
    return dict(zip(_flat.field_names(state), jax.tree_util.tree_leaves(state)))


def _blocks(blocks: Any) -> dict[str, Any]:
    """``{"out<-in": leaf}`` of a state of states (``"c<-h"``; ``"1.c<-0.h"`` in a stack)."""
    leaves = jax.tree_util.tree_leaves_with_path(blocks)
    n = math.isqrt(len(leaves))
    # Rows and columns have the state's structure, so the diagonal block (i, i)'s path is field i's path twice.
    names = [_flat.path_name(leaves[i * n + i][0][: len(leaves[i * n + i][0]) // 2]) for i in range(n)]
    return {f"{names[k // n]}<-{names[k % n]}": leaf for k, (_, leaf) in enumerate(leaves)}


def _curves(data: Any, whole: Callable[[Any], dict[str, Any]], one: Callable[[Any], Any]) -> dict[str, Any]:
    """``{label: values}`` from a mapping (arrays or results, read by ``one``) or one result (split by ``whole``)."""
    if isinstance(data, Mapping):
        return {label: one(value) for label, value in data.items()}
    return whole(data)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[1]:
        ax.legend()


def _flow_whole(result: Any) -> dict[str, Any]:
    if isinstance(result, GradientFlow):
        return _fields(result.norms)
    if isinstance(result, ProductNorms):
        return {**_blocks(result.blocks), "total": result.total}
    raise TypeError(
        "plot.gradient_flow: `norms` must be {label: (T + 1,)}, a GradientFlow or a ProductNorms, "
        f"got {type(result)}."
    )


def _flow_one(value: Any) -> Any:
    return value.total if isinstance(value, GradientFlow | ProductNorms) else value


def gradient_flow(
    norms: Mapping[str, Any] | GradientFlow | ProductNorms,
    *,
    ax: Any = None,
    title: str = "Gradient flow through time",
    log: bool = True,
) -> Any:
    """``|| dL / d s_t ||`` against the steps back from the loss, ``T - t``, one curve per label.

    Args:
      norms: ``{label: (T + 1,)}`` in boundary order, e.g. ``{"LSTM c": flow.norms.c, "LSTM h": flow.norms.h}``;
        or the :class:`~recurrax.dynamics.GradientFlow` itself (one curve per field of ``norms``), or a
        :class:`~recurrax.dynamics.ProductNorms` from :func:`recurrax.dynamics.jacobian_product_norms` (one
        curve per block, ``"c<-h"`` for ``|| d c_T / d h_t ||``, and ``"total"``); a mapping's values may be
        such results (their ``total`` is drawn).
      ax: an ``Axes`` to draw on; a new figure when ``None``.
      title: the axes title.
      log: a logarithmic y axis.
    """
    norms = _curves(norms, _flow_whole, _flow_one)
    fig, ax = _axes(ax, (6, 4))
    for label, values in norms.items():
        values = np.asarray(values, np.float64)
        if log:  # exact zeros (no path yet, or float underflow) are left out rather than drawn to the axis
            values = np.where(values > 0, values, np.nan)
        ax.plot(np.arange(len(values))[::-1], values, label=label)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="steps back from the loss, T - t", ylabel="gradient norm", title=title)
    _legend(ax)
    return fig


def _exponents(value: Any) -> Any:
    return value.exponents if isinstance(value, LyapunovSpectrum) else value


def lyapunov_spectrum(
    spectra: Mapping[str, Any] | LyapunovSpectrum, *, ax: Any = None, title: str = "Lyapunov spectra"
) -> Any:
    """Exponents against their index, one line per label.

    Args:
      spectra: ``{label: (k,)}`` (e.g. ``LyapunovSpectrum.exponents``), ``{label: LyapunovSpectrum}``, or one
        :class:`~recurrax.dynamics.LyapunovSpectrum`. ``-inf`` exponents (directions mapped to zero) are left out.
      ax: an ``Axes`` to draw on; a new figure when ``None``.
      title: the axes title.
    """
    spectra = _curves(spectra, lambda result: {"exponents": _exponents(result)}, _exponents)
    fig, ax = _axes(ax, (6, 4))
    for label, exponents in spectra.items():
        exponents = np.asarray(exponents, np.float64)
        exponents = np.where(np.isfinite(exponents), exponents, np.nan)
        ax.plot(np.arange(1, len(exponents) + 1), exponents, marker=".", label=label)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set(xlabel="index i", ylabel="exponent λ_i (per step)", title=title)
    _legend(ax)
    return fig


def _kick_time(total: Any) -> int:
    """The first boundary where the perturbed run differs from the clean one (0 if it never does)."""
    moved = np.flatnonzero(np.asarray(total) > 0)
    return int(moved[0]) if moved.size else 0


def perturbation_decay(
    responses: Mapping[str, Any] | PerturbationResponse,
    t0: int | None = None,
    *,
    ax: Any = None,
    normalise: bool = True,
    title: str = "Perturbation response",
    log: bool = True,
) -> Any:
    """Distance from the clean run against the steps since the kick, one curve per label.

    Args:
      responses: ``{label: (T + 1,)}`` distances (``PerturbationResponse.distance.c`` ...); or one
        :class:`~recurrax.dynamics.PerturbationResponse` (a curve per field and ``"total"``, all normalised
        by the total kick, so each field's curve is its share of the kick); or ``{label: PerturbationResponse}``
        (their ``total``).
      t0: the boundary of the kick; the curves start there. ``None``: 0 for arrays, and for a
        ``PerturbationResponse`` the first boundary where the runs differ (where the kick landed).
      normalise: divide by the distance at ``t0`` (the retained fraction).
    """
    per_curve = normalise  # a PerturbationResponse's fields share one scale, the total kick
    if isinstance(responses, PerturbationResponse):
        t0 = _kick_time(responses.total) if t0 is None else t0
        scale = np.asarray(responses.total, np.float64)[t0] if normalise else 1.0
        curves = {**_fields(responses.distance), "total": responses.total}
        responses = {label: np.asarray(d, np.float64) / scale for label, d in curves.items()}
        per_curve = False
    elif isinstance(responses, Mapping):
        results = [v.total for v in responses.values() if isinstance(v, PerturbationResponse)]
        if t0 is None:
            t0 = min(_kick_time(total) for total in results) if results else 0
        responses = {k: v.total if isinstance(v, PerturbationResponse) else v for k, v in responses.items()}
    else:
        raise TypeError(
            "plot.perturbation_decay: `responses` must be {label: (T + 1,)} or a PerturbationResponse, "
            f"got {type(responses)}."
        )
    fig, ax = _axes(ax, (6, 4))
    for label, distance in responses.items():
        distance = np.asarray(distance, np.float64)[t0:]
        if per_curve:
            distance = distance / distance[0]
        ax.plot(np.arange(len(distance)), distance, label=label)
    if log:
        ax.set_yscale("log")
    ylabel = "retained fraction of the kick" if normalise else "distance from the clean run"
    ax.set(xlabel="steps after the kick", ylabel=ylabel, title=title)
    _legend(ax)
    return fig


def perturbation_response(
    responses: Mapping[str, Any] | PerturbationResponse, t0: int | None = None, **kwargs: Any
) -> Any:
    """:func:`perturbation_decay` under the name of :func:`recurrax.dynamics.perturbation_response`."""
    return perturbation_decay(responses, t0, **kwargs)


def _flat_states(states: Any) -> Any:
    """A state (a NamedTuple of leaves ``(..., n)``, or a stack's tuple of them) as its flat real view ``(..., S)``;
    arrays as they are."""
    return _flat.flatten(states) if isinstance(states, tuple) else states


def fixed_points(
    trajectory: Any,
    points: Any,
    stability: Sequence[int] | Any = None,
    *,
    ax: Any = None,
    title: str = "Fixed points",
) -> Any:
    """Fixed points and a trajectory on the trajectory's top two principal components.

    Args:
      trajectory: flat states ``(N, S)`` of one run, or ``(B, N, S)`` of ``B`` runs drawn separately
        (e.g. ``dynamics.flatten(states)``); or the states themselves, as :func:`recurrax.dynamics.trajectory`
        returns them (leaves ``(N, n)`` or ``(B, N, n)``, flattened here, complex fields in their real view).
      points: flat fixed points ``(M, S)``, their states (leaves ``(M, n)``), or the
        :class:`~recurrax.dynamics.FixedPoints` from :func:`recurrax.dynamics.find_fixed_points` (its
        ``linearization.stability`` then colours them unless ``stability`` is given).
      stability: ``(M,)`` classes (``dynamics.STABLE`` ...); all drawn alike when ``None``.
    """
    if isinstance(points, FixedPoints):
        stability = points.linearization.stability if stability is None else stability
        points = points.states
    trajectory, points = _flat_states(trajectory), _flat_states(points)
    fig, ax = _axes(ax, (5, 5))
    runs = np.asarray(trajectory, np.float64)
    runs = runs[None] if runs.ndim == 2 else runs
    flat = runs.reshape(-1, runs.shape[-1])
    points = np.asarray(points, np.float64).reshape(-1, flat.shape[-1])
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:2].T
    for i, run in enumerate(runs):
        path = (run - mean) @ basis
        ax.plot(path[:, 0], path[:, 1], color="0.6", lw=0.6, label="trajectories" if i == 0 else None)
    projected = (points - mean) @ basis
    classes = np.zeros(len(points), int) if stability is None else np.asarray(stability, int)
    for code, name in enumerate(STABILITY_NAMES):
        chosen = classes == code
        if chosen.any():
            marker, color = _STYLE[name]
            ax.scatter(projected[chosen, 0], projected[chosen, 1], marker=marker, color=color, label=name, zorder=3)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    _legend(ax)
    return fig


def _unit_tau(value: Any) -> Any:
    return value.unit_tau if isinstance(value, GateTimescales) else value


def _whole_taus(result: Any) -> dict[str, Any]:
    taus = _unit_tau(result)
    if isinstance(taus, tuple):  # a stack's: one entry per layer
        return {f"layer {i}": t for i, t in enumerate(taus)}
    return {"timescales": taus}


def timescales(
    taus: Mapping[str, Any] | GateTimescales | Any,
    *,
    ax: Any = None,
    title: str = "Memory timescales",
    horizon: float | None = None,
) -> Any:
    """Each unit's timescale (steps), sorted from the slowest, one curve per label: ``{label: (H,)}``.

    E.g. ``GateTimescales.unit_tau`` or :func:`recurrax.dynamics.jacobian_timescales`; ``taus`` may also be
    one :class:`~recurrax.dynamics.GateTimescales` (from :func:`recurrax.dynamics.gate_timescales`, its
    ``unit_tau``), one array of timescales, or ``{label: GateTimescales}``. A dashed line marks ``horizon``
    (the task's sequence length) when given.
    """
    taus = _curves(taus, _whole_taus, _unit_tau)
    fig, ax = _axes(ax, (6, 4))
    for label, tau in taus.items():
        tau = np.sort(np.asarray(tau, np.float64).ravel())[::-1]
        ax.plot(np.arange(1, len(tau) + 1), tau, marker=".", label=label)
    if horizon is not None:
        ax.axhline(horizon, color="0.5", ls="--", lw=0.8, label=f"T = {horizon:g}")
    ax.set_yscale("log")
    ax.set(xlabel="unit (slowest first)", ylabel="timescale (steps)", title=title)
    _legend(ax)
    return fig


def report(result: Report, *, label: str = "") -> dict[str, Any]:
    """The figures of a :func:`recurrax.dynamics.report`, ``{file name: Figure}``: ``gradient_flow.png``,
    ``perturbation.png``, ``lyapunov.png``, ``timescales.png`` (with gated cells) and ``slow_points.png`` (with
    slow points). ``label`` prefixes the titles and curves, e.g. the network's name."""
    if not isinstance(result, Report):
        raise TypeError(f"plot.report: `result` must be a dynamics.Report, got {type(result).__name__}.")
    name = f"{label} " if label else ""
    figures = {
        "gradient_flow.png": gradient_flow(
            {name + f: c for f, c in result.gradient.items()},
            title=f"{name}|| dL / d s_t ||, relative to the gradient at T".strip(),
        ),
        "perturbation.png": perturbation_decay(
            {f"{name}kick {f}": c for f, c in result.retention.items()},
            result.t0,
            normalise=False,
            title=f"{name}retained fraction of a kick at t0".strip(),
        ),
        "lyapunov.png": lyapunov_spectrum({label or "spectrum": result.lyapunov}, title=f"{name}Lyapunov spectrum"),
    }
    if result.timescales:
        figures["timescales.png"] = timescales(
            {f"{name}{f}": t for f, t in result.timescales.items()},
            horizon=result.num_steps,
            title=f"{name}gate timescales".strip(),
        )
    points = result.fixed_points
    if points is not None and points.q.shape[0] and result.trajectories is not None:
        figures["slow_points.png"] = fixed_points(result.trajectories, points, title=f"{name}slow points".strip())
    return figures
