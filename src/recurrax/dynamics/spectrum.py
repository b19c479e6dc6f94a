"""Summaries of a Lyapunov spectrum: its dimension, its entropy, and how spread out its vectors are.

Each is one pure call on arrays with any leading batch axes, so ``jax.jit`` and ``jax.vmap`` compose
with it; pass ``LyapunovSpectrum.exponents`` and ``LyapunovSpectrum.vectors`` from
:func:`recurrax.dynamics.lyapunov_spectrum`. Exponents are per step (natural log), so the entropy is in
nats per step. ``-inf`` exponents (directions mapped to zero) are allowed; ``NaN`` gives ``NaN``.
"""

from __future__ import annotations

import jax.numpy as jnp

from recurrax.core import Array


def kaplan_yorke_dimension(exponents: Array) -> Array:
    """The Kaplan-Yorke (Lyapunov) dimension ``D = k + sum_{i<=k} lambda_i / |lambda_{k+1}|`` (Kaplan & Yorke, 1979).

    The exponents are sorted in descending order first; ``k`` is the largest index whose partial sum
    ``lambda_1 + ... + lambda_k`` is non-negative. Edge cases: ``D = 0`` when ``lambda_1 < 0`` (a
    contracting run: a fixed point), ``D = n`` when every partial sum is non-negative (the ``n`` given
    exponents do not contract volume; the true dimension may be larger if more exist).

    Args:
      exponents: ``(..., n)``, e.g. ``LyapunovSpectrum.exponents`` (the full spectrum, ``k = S``, for the
        attractor's dimension).

    Returns:
      ``(...)``, in ``[0, n]``.
    """
    exponents = jnp.asarray(exponents)
    lam = -jnp.sort(-exponents, axis=-1)
    n = lam.shape[-1]
    partial = jnp.cumsum(lam, axis=-1)
    # With the exponents sorted the partial sums rise then fall, so the non-negative ones are a prefix.
    k = jnp.sum(partial >= 0, axis=-1)
    inside = (k > 0) & (k < n)
    at = jnp.clip(k - 1, 0, n - 1)[..., None]
    head = jnp.take_along_axis(partial, at, axis=-1)[..., 0]
    # lambda_{k+1} < -partial_k <= 0 when 0 < k < n; -inf gives a zero fraction, not NaN.
    after = jnp.abs(jnp.take_along_axis(lam, jnp.clip(k, 0, n - 1)[..., None], axis=-1)[..., 0])
    fraction = jnp.where(inside, head / jnp.where(inside, after, 1.0), 0.0)
    dim = k.astype(fraction.dtype) + fraction
    return jnp.where(jnp.any(jnp.isnan(exponents), axis=-1), jnp.nan, dim)


def ks_entropy(exponents: Array) -> Array:
    """Pesin's bound on the Kolmogorov-Sinai entropy: the sum of the positive exponents, ``(..., n) -> (...)``.

    Equal to the entropy for measures smooth along unstable directions (Pesin, 1977; Ledrappier & Young,
    1985), an upper bound otherwise (Ruelle, 1978). Zero for a non-chaotic run.
    """
    exponents = jnp.asarray(exponents)
    return jnp.sum(jnp.where((exponents > 0) | jnp.isnan(exponents), exponents, 0.0), axis=-1)


def participation_ratio(vectors: Array, *, normalize: bool = False) -> Array:
    """How many coordinates each vector spreads over: ``PR(v) = (sum_i v_i^2)^2 / sum_i v_i^4`` per column.

    ``PR`` is 1 for a vector along one coordinate and ``S`` for one spread evenly over all ``S``; it does
    not depend on the vector's scale. A zero vector gives 0. For ``LyapunovSpectrum.vectors`` the coordinates
    are those of the flat real state (:func:`recurrax.dynamics.flatten`: a complex unit counts as its two real
    parts); complex vectors (e.g. ``Linearization.eigenvectors``) use ``|v_i|``.

    Args:
      vectors: ``(..., S, k)``, one vector per column, e.g. ``LyapunovSpectrum.vectors``.
      normalize: divide by ``S``, giving a fraction in ``[1/S, 1]``.

    Returns:
      ``(..., k)``.
    """
    vectors = jnp.asarray(vectors)
    if vectors.ndim < 2:
        raise ValueError(
            f"dynamics.participation_ratio: `vectors` must be (..., S, k), one vector per column, "
            f"got shape {tuple(vectors.shape)}."
        )
    # Scaled to a unit maximum first, so the fourth powers neither overflow nor underflow in float32.
    scale = jnp.max(jnp.abs(vectors), axis=-2, keepdims=True)
    v = vectors / jnp.where(scale > 0, scale, 1.0)
    square = jnp.sum(jnp.abs(v) ** 2, axis=-2)
    fourth = jnp.sum(jnp.abs(v) ** 4, axis=-2)
    ratio = jnp.where(fourth > 0, square**2 / jnp.where(fourth > 0, fourth, 1.0), 0.0)
    return ratio / vectors.shape[-2] if normalize else ratio
