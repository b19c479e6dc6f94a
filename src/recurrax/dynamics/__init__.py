"""State-dynamics analysis: functions of ``(cell, params, ...)`` for one example, to be vmapped.

Every function takes a :class:`recurrax.Cell`, its params and one example (inputs ``(T, I)``,
state leaves ``(n,)``) and is pure, so ``jax.jit`` and ``jax.vmap`` (over params, initial states,
inputs) compose with it: a sweep over a thousand initial states is one vmapped call. The state's
named fields stay visible in the results (``.h`` and ``.c`` for an LSTM).

- :func:`trajectory`: every state over time.
- :func:`step_jacobian(s)`, :func:`input_jacobian(s)`: ``d s'/d s`` (blocks ``jac.blocks.h.c`` ...) and ``d s'/d x``.
- :func:`gradient_flow`: ``dL / d s_t`` for every ``t`` in one reverse pass, split by field;
  :func:`jacobian_product_norms`: ``|| d s_T / d s_t ||_2``.
- :func:`perturbation_response`: how long a kick to ``h`` or ``c`` is remembered.
- :func:`lyapunov_spectrum`: QR re-orthonormalisation, burn-in, finite-time exponents, Lyapunov vectors;
  :func:`flossing_penalty`: the differentiable top-``k`` exponent penalty of gradient flossing;
  :func:`kaplan_yorke_dimension`, :func:`ks_entropy`, :func:`participation_ratio`: one-call summaries of it;
  :func:`parallelizability`: whether Newton's method (``backend="newton"``) can solve a run in parallel.
- :func:`find_fixed_points` (:func:`minimize_speed`, :func:`linearize`): fixed and slow points;
  :func:`slow_manifold`: whether they form a line attractor or a slow manifold.
- :func:`gate_timescales`, :func:`jacobian_timescales`: memory timescales from gates and eigenvalues.
- :func:`report`: all of the above on a trained network, averaged over probe sequences, as one :class:`Report`
  of numbers per state field (``recurrax.plot.report`` draws it).

A ``stacked`` network is analysed as one cell whose state is the tuple of its layers' states (see
:func:`recurrax.as_cell`): results carry that structure (``flow.norms[1].c`` is the second layer's ``c``), and
:func:`field_names` names its leaves ``"0.h"``, ``"1.c"``, ... as :class:`Report` keys them.

States with complex fields (the LRU's ``x``) are analysed in a real view: each complex unit is two real
coordinates, ``Re`` and ``Im`` interleaved (see :func:`flatten`), so Jacobians, spectra and gradients are
those of a real map of real vectors.
"""

from recurrax.dynamics._flat import field_names, flatten, unflatten
from recurrax.dynamics.fixed_points import (
    SADDLE,
    STABILITY_NAMES,
    STABLE,
    UNSTABLE,
    FixedPoints,
    Linearization,
    SlowManifold,
    eigen_time_constants,
    find_fixed_points,
    linearize,
    linearize_matrix,
    minimize_speed,
    slow_manifold,
    speed,
)
from recurrax.dynamics.gradient_flow import GradientFlow, ProductNorms, gradient_flow, jacobian_product_norms
from recurrax.dynamics.jacobians import (
    InputJacobian,
    StepJacobian,
    input_jacobian,
    input_jacobians,
    step_jacobian,
    step_jacobians,
)
from recurrax.dynamics.lyapunov import LyapunovSpectrum, flossing_penalty, lyapunov_spectrum
from recurrax.dynamics.parallelizability import Parallelizability, parallelizability
from recurrax.dynamics.perturbation import PerturbationResponse, field_perturbation, perturbation_response
from recurrax.dynamics.report import Report, report
from recurrax.dynamics.spectrum import kaplan_yorke_dimension, ks_entropy, participation_ratio
from recurrax.dynamics.timescales import GateTimescales, gate_tau, gate_timescales, jacobian_timescales, retention_gate
from recurrax.dynamics.trajectory import trajectory

__all__ = [
    "SADDLE",
    "STABILITY_NAMES",
    "STABLE",
    "UNSTABLE",
    "FixedPoints",
    "GateTimescales",
    "GradientFlow",
    "InputJacobian",
    "Linearization",
    "LyapunovSpectrum",
    "Parallelizability",
    "PerturbationResponse",
    "ProductNorms",
    "Report",
    "SlowManifold",
    "StepJacobian",
    "eigen_time_constants",
    "field_names",
    "field_perturbation",
    "find_fixed_points",
    "flatten",
    "flossing_penalty",
    "gate_tau",
    "gate_timescales",
    "gradient_flow",
    "input_jacobian",
    "input_jacobians",
    "jacobian_product_norms",
    "jacobian_timescales",
    "kaplan_yorke_dimension",
    "ks_entropy",
    "linearize",
    "linearize_matrix",
    "lyapunov_spectrum",
    "minimize_speed",
    "parallelizability",
    "participation_ratio",
    "perturbation_response",
    "report",
    "retention_gate",
    "slow_manifold",
    "speed",
    "step_jacobian",
    "step_jacobians",
    "trajectory",
    "unflatten",
]
