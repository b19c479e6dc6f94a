"""Sequence parallelism: linear-recurrence cells scanned over a sequence sharded along time on 8 devices.

References: minGRU's equations in NumPy; the sequential ``recurrax.scan`` (the cells' step-by-step
``transition``) for minLSTM and the complex LRU, values and gradients. Bodies in _child_sharded.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _multidevice import assert_ok

import recurrax as rx
from recurrax import distributed as dist
from recurrax.cells.linear import min_gru
from recurrax.sequence_parallel import sequence_parallel_scan

CHECKS = [
    "sequence_parallel_min_gru_equals_numpy_equations",  # log and linear space, Auto and Explicit mesh axes
    "sequence_parallel_equals_sequential_scan_values_and_grads",
    "sequence_parallel_with_the_batch_split_too",  # a (data 2, time 4) mesh
    "sequence_parallel_rejects_bad_input",
]


@pytest.mark.parametrize("name", CHECKS)
def test_on_eight_devices(eight_devices, name):
    assert_ok(eight_devices[0], name)


def test_one_device_equals_sequential_scan():
    cell = min_gru(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 9, 3))
    state = rx.RNNState(h=-jnp.ones((2, 4)))
    want = jax.jit(functools.partial(rx.scan, cell, backend="sequential"))(params, xs, state)
    got = jax.jit(functools.partial(sequence_parallel_scan, cell, mesh=dist.make_mesh((1,), ("time",))))(
        params, xs, state
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
