"""Diagonal linear recurrences ``s_t = a_t * s_{t-1} + b_t`` on arrays, sequential or parallel in time.

The public face of :mod:`recurrax.backends.linear`, where the scans live beside the ``associative`` and
``chunked`` backends of :func:`recurrax.scan` that run them for linear-recurrence cells.
"""

from recurrax.backends.linear import (
    BACKENDS,
    PARALLEL,
    apply_affine,
    choose,
    compose,
    compose_log,
    linear_scan,
    segmented,
    states,
)

__all__ = [
    "BACKENDS",
    "PARALLEL",
    "apply_affine",
    "choose",
    "compose",
    "compose_log",
    "linear_scan",
    "segmented",
    "states",
]
