"""Figures for :mod:`recurrax.dynamics` results (optional: ``pip install recurrax[plot]``).

Each function draws on the matplotlib ``Axes`` it is given, or on a new ``Figure`` (made without
``pyplot``, so nothing global changes), and returns that figure; ``fig.savefig(path)`` writes it.
Curves are passed as ``{label: values}`` so models and state fields can share one plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recurrax.dynamics.fixed_points import STABILITY_NAMES

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


def gradient_flow(
    norms: Mapping[str, Any], *, ax: Any = None, title: str = "Gradient flow through time", log: bool = True
) -> Any:
    """``|| dL / d s_t ||`` against the steps back from the loss, ``T - t``, one curve per label.

    Args:
      norms: ``{label: (T + 1,)}`` in boundary order, e.g. ``{"LSTM c": flow.norms.c, "LSTM h": flow.norms.h}``
        from :func:`recurrax.dynamics.gradient_flow` (or ``ProductNorms`` entries).
      ax: an ``Axes`` to draw on; a new figure when ``None``.
      title: the axes title.
      log: a logarithmic y axis.
    """
    fig, ax = _axes(ax, (6, 4))
    for label, values in norms.items():
        values = np.asarray(values, np.float64)
        if log:  # exact zeros (no path yet, or float underflow) are left out rather than drawn to the axis
            values = np.where(values > 0, values, np.nan)
        ax.plot(np.arange(len(values))[::-1], values, label=label)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="steps back from the loss, T - t", ylabel="gradient norm", title=title)
    ax.legend()
    return fig


def lyapunov_spectrum(spectra: Mapping[str, Any], *, ax: Any = None, title: str = "Lyapunov spectra") -> Any:
    """Exponents against their index, one line per label: ``{label: (k,)}`` (e.g. ``LyapunovSpectrum.exponents``)."""
    fig, ax = _axes(ax, (6, 4))
    for label, exponents in spectra.items():
        exponents = np.asarray(exponents, np.float64)
        ax.plot(np.arange(1, len(exponents) + 1), exponents, marker=".", label=label)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set(xlabel="index i", ylabel="exponent λ_i (per step)", title=title)
    ax.legend()
    return fig


def perturbation_decay(
    responses: Mapping[str, Any],
    t0: int = 0,
    *,
    ax: Any = None,
    normalise: bool = True,
    title: str = "Perturbation response",
    log: bool = True,
) -> Any:
    """Distance from the clean run against the steps since the kick, one curve per label.

    Args:
      responses: ``{label: (T + 1,)}`` distances (``PerturbationResponse.distance.c`` ...).
      t0: the boundary of the kick; the curves start there.
      normalise: divide by the distance at ``t0`` (the retained fraction).
    """
    fig, ax = _axes(ax, (6, 4))
    for label, distance in responses.items():
        distance = np.asarray(distance, np.float64)[t0:]
        if normalise:
            distance = distance / distance[0]
        ax.plot(np.arange(len(distance)), distance, label=label)
    if log:
        ax.set_yscale("log")
    ylabel = "retained fraction of the kick" if normalise else "distance from the clean run"
    ax.set(xlabel="steps after the kick", ylabel=ylabel, title=title)
    ax.legend()
    return fig


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
        (e.g. ``dynamics.flatten(states)``).
      points: flat fixed points ``(M, S)``.
      stability: ``(M,)`` classes (``dynamics.STABLE`` ...); all drawn alike when ``None``.
    """
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
    ax.legend()
    return fig


def timescales(
    taus: Mapping[str, Any], *, ax: Any = None, title: str = "Memory timescales", horizon: float | None = None
) -> Any:
    """Each unit's timescale (steps), sorted from the slowest, one curve per label: ``{label: (H,)}``.

    E.g. ``GateTimescales.unit_tau`` or :func:`recurrax.dynamics.jacobian_timescales`; a dashed line
    marks ``horizon`` (the task's sequence length) when given.
    """
    fig, ax = _axes(ax, (6, 4))
    for label, tau in taus.items():
        tau = np.sort(np.asarray(tau, np.float64).ravel())[::-1]
        ax.plot(np.arange(1, len(tau) + 1), tau, marker=".", label=label)
    if horizon is not None:
        ax.axhline(horizon, color="0.5", ls="--", lw=0.8, label=f"T = {horizon:g}")
    ax.set_yscale("log")
    ax.set(xlabel="unit (slowest first)", ylabel="timescale (steps)", title=title)
    ax.legend()
    return fig
