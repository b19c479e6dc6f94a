"""Lyapunov spectra by QR re-orthonormalisation along a trajectory (Benettin et al., 1980).

``k`` tangent vectors ride along the run: each step they are mapped by the step Jacobian (as
Jacobian-vector products, so the ``(S, S)`` matrix is never formed) and re-orthonormalised by a QR
decomposition; the exponents are the time averages of ``log |R_ii|``. Inputs drive the run
(``xs``); an autonomous run is a constant input, e.g. ``jnp.zeros((T, I))``.

Complex state leaves (the LRU's ``x``) count as two real coordinates per unit (the real view of
:func:`recurrax.dynamics.flatten`), so ``S`` counts them twice and a complex-diagonal ``x' = lambda x``
contributes ``log |lambda_i|`` twice. Directions the step maps to zero (a read-out such as the LRU's
``y``, which depends on ``x'`` and the input but not on ``y``) have ``R_ii = 0`` up to round-off: their
exponents are ``-inf`` or very negative (about ``log`` of the float epsilon), never a rate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat


class LyapunovSpectrum(NamedTuple):
    """The ``k`` leading exponents (per step, natural log) and what they were averaged from.

    Attributes:
      exponents: ``(k,)``, sorted in descending order.
      local: ``(T - burn_in, k)``, ``log |R_ii|`` of each measured step (QR column order).
      finite_time: ``(T - burn_in, k)``, the running means of ``local``: the finite-time exponents
        over the first ``1, 2, ...`` measured steps.
      finite: whether every state and every ``R`` stayed finite; when ``False`` the numbers are not
        a spectrum (the run diverged).
      first_nonfinite: the first step whose state or ``R`` was not finite, ``-1`` when none.
      vectors: ``(S, k)``, the orthonormal tangent vectors ``Q`` after the last step (the Gram-Schmidt,
        or backward, Lyapunov vectors at the final state, in the flat real state), column ``i`` for
        ``exponents[i]``; see :func:`recurrax.dynamics.participation_ratio`.
    """

    exponents: Array
    local: Array
    finite_time: Array
    finite: Array
    first_nonfinite: Array
    vectors: Array | None = None


@_flat.on_steps
def lyapunov_spectrum(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    k: int | None = None,
    burn_in: int = 0,
    key: Array | None = None,
    on_nonfinite: str = "raise",
    _detach_states: bool = False,
) -> LyapunovSpectrum:
    """The top ``k`` Lyapunov exponents of the run driven by ``xs``.

    Args:
      cell, params: the cell and its params.
      xs: one example's inputs ``(T, I)``.
      state: the initial state; zeros when ``None``.
      k: the number of exponents, ``1 <= k <= S`` (the real state size: complex units count twice); all
        ``S`` when ``None``.
      burn_in: steps run (state and tangent vectors) before averaging starts, ``0 <= burn_in < T``.
      key: a random orthonormal start for the tangent vectors; the first ``k`` unit vectors when ``None``.
      on_nonfinite: ``"raise"``: a diverged run raises ``FloatingPointError`` when the values are
        concrete (outside ``jit``/``vmap``); ``"flag"``: only report it in ``finite``. Inside
        transforms both only flag.

    Returns:
      A :class:`LyapunovSpectrum`.
    """
    fn = "dynamics.lyapunov_spectrum"
    xs = _flat.check_inputs(fn, cell, params, xs)
    state = _flat.initial_state(fn, cell, params, state)
    size = sum(_flat.sizes(state))
    num_steps = xs.shape[0]
    k = size if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"{fn}: `k` must be an int in [1, S={size}] (the state size), got {k!r}.")
    if num_steps == 0:
        raise ValueError(f"{fn}: `xs` must have at least one step to average over, got T=0 (shape {xs.shape}).")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int | np.integer) or not 0 <= burn_in < num_steps:
        raise ValueError(f"{fn}: `burn_in` must lie in [0, T={num_steps}), got {burn_in!r}.")
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"{fn}: `on_nonfinite` must be 'raise' or 'flag', got {on_nonfinite!r}.")
    f = _flat.step_fn(cell, params, state)
    s0 = _flat.flatten(state)
    if key is None:
        q0 = jnp.eye(size, k, dtype=s0.dtype)
    else:
        q0 = jnp.linalg.qr(jax.random.normal(key, (size, k), s0.dtype))[0]

    def body(carry, z):
        s, q = carry
        if _detach_states:  # gradient flossing: differentiate the Jacobians along a fixed trajectory
            s = jax.lax.stop_gradient(s)
        s_new, jvp = jax.linearize(lambda v: f(v, z), s)
        q, r = jnp.linalg.qr(jax.vmap(jvp, in_axes=1, out_axes=1)(q))
        log_r = jnp.log(jnp.abs(jnp.diagonal(r)))
        ok = jnp.all(jnp.isfinite(s_new)) & jnp.all(jnp.isfinite(r))
        return (s_new, q), (log_r, ok)

    zs = cell.project(params, xs)
    (_, q), (local, ok) = jax.lax.scan(body, (s0, q0), zs)
    local = local[burn_in:]
    steps = jnp.arange(1, local.shape[0] + 1, dtype=local.dtype)[:, None]
    finite_time = jnp.cumsum(local, axis=0) / steps
    order = jnp.argsort(-finite_time[-1])
    exponents = finite_time[-1][order]
    finite = jnp.all(ok)
    first = jnp.where(finite, -1, jnp.argmin(ok))
    report = _flat.concrete(finite)
    if on_nonfinite == "raise" and report is not None and not bool(report):
        raise FloatingPointError(
            f"{fn}: the trajectory diverged: the state or its tangent vectors are not finite from step "
            f"{int(first)} of T={num_steps}; no spectrum (pass on_nonfinite='flag' to get the flag instead)."
        )
    return LyapunovSpectrum(exponents, local, finite_time, finite, first, q[:, order])


@_flat.on_steps
def flossing_penalty(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    k: int = 1,
    target: float = 0.0,
    burn_in: int = 0,
    key: Array | None = None,
) -> Array:
    """Gradient flossing (Engelken, NeurIPS 2023): ``sum_i (lambda_i - target)^2`` over the top ``k`` Lyapunov
    exponents of the run driven by ``xs``, differentiable in ``params``, to add to a training loss so the
    exponents are pushed towards ``target`` (0: neither exploding nor vanishing gradients).

    The gradient flows through each step's Jacobian and the QR re-orthonormalisations, along the trajectory
    held fixed (``stop_gradient`` on the states): through the states themselves it would be the gradient of a
    chaotic run, which explodes exactly where flossing is needed (on a chaotic 16-unit Elman network, about 5e8
    against 15). It is therefore not the exact derivative of the penalty, a rough function of the params, but a
    descent direction on average: use it over batches of runs, as a regulariser, not on one run alone.

    Args:
      cell, params, xs, state, burn_in, key: as for :func:`lyapunov_spectrum` (``xs: (T, I)``, one example;
        vmap over a batch and average).
      k: how many of the top exponents to regularise.
      target: the value they are pushed towards.

    Returns:
      A scalar; ``NaN`` where the run diverged (as the spectrum's ``finite`` flags).
    """
    spectrum = lyapunov_spectrum(
        cell, params, xs, state, k=k, burn_in=burn_in, key=key, on_nonfinite="flag", _detach_states=True
    )
    penalty = jnp.sum((spectrum.exponents - target) ** 2)
    return jnp.where(spectrum.finite, penalty, jnp.nan)
