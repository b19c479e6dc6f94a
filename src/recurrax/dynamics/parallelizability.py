"""Whether a run can be solved parallel in time: its largest Lyapunov exponent (Gonzalez et al. 2025).

Newton's method on the whole trajectory (:func:`recurrax.backends.newton`) converges in few iterations when the
run is *predictable*, that is when a perturbation of the state dies out (largest Lyapunov exponent
``lambda_max < 0``): the merit function's conditioning is then bounded independently of ``T``. A chaotic run
(``lambda_max > 0``) amplifies every error along the sequence, and Newton needs about ``T`` iterations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, State
from recurrax.dynamics import _flat
from recurrax.dynamics.lyapunov import lyapunov_spectrum


class Parallelizability(NamedTuple):
    """What the largest Lyapunov exponent of one run says about solving it by Newton's method.

    Attributes:
      lambda_max: the largest exponent (per step, natural log).
      finite_time: ``(T - burn_in,)`` its running mean, to see whether it has settled.
      predictable: ``lambda_max < 0`` and the run stayed finite: Newton is expected to converge in few iterations.
      memory: ``1 / |lambda_max|`` steps, how long a perturbation takes to shrink by ``e`` (``inf`` unless
        predictable); Newton's iterations grow with it.
      finite: whether the trajectory and its tangent stayed finite.
    """

    lambda_max: Array
    finite_time: Array
    predictable: Array
    memory: Array
    finite: Array


@_flat.on_steps
def parallelizability(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State | None = None,
    *,
    burn_in: int = 0,
    key: Array | None = None,
) -> Parallelizability:
    """Estimates ``lambda_max`` along the run driven by ``xs: (T, I)`` (one example; vmap over batches).

    Costs one sequential pass with one Jacobian-vector product per step (:func:`lyapunov_spectrum` with
    ``k=1``), so measure it on a representative sequence, not on every call.
    """
    spectrum = lyapunov_spectrum(cell, params, xs, state, k=1, burn_in=burn_in, key=key, on_nonfinite="flag")
    lam = spectrum.exponents[0]
    predictable = spectrum.finite & (lam < 0)
    memory = jnp.where(predictable, 1 / jnp.abs(jnp.where(predictable, lam, 1.0)), jnp.inf)
    return Parallelizability(lam, spectrum.finite_time[:, 0], predictable, memory, spectrum.finite)
