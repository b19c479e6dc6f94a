"""Finite differences in float64: the reference derivative for the dynamics tests."""

from __future__ import annotations

import numpy as np


def numeric_jacobian(f, v, eps=1e-6):
    """Central differences of ``f: (n,) -> (m,)`` in float64: ``(m, n)``."""
    v = np.asarray(v, np.float64)
    cols = []
    for j in range(v.size):
        d = np.zeros_like(v)
        d[j] = eps
        cols.append((f(v + d) - f(v - d)) / (2 * eps))
    return np.stack(cols, axis=-1)
