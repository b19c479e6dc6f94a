"""Every measured threshold the backends read, each with the ``benchmarks/RESULTS.md`` step that measured it.

Nothing else in recurrax holds a tuning constant: ``backend="auto"`` decides from these alone (each backend's
``prefers``), and ``unroll=None`` reads :data:`DEFAULT_UNROLL`.
"""

from __future__ import annotations

NATIVE_FROM = 128
"""The smallest ``T * N`` (steps times batch) that ``auto`` runs in the native CPU kernels (RESULTS step 13).
Below it a call's fixed costs (packing the weights, padding) outweigh the kernels: LSTM B=1, I=250, H=200 forward
0.99 ms native against 0.71 ms in XLA at T=64 (fwd+bwd 2.15 against 1.77 ms), while at T=1000 (H=64) the kernels
win, 1.2 against 1.5 ms (2.6 against 4.0 ms)."""

NATIVE_FOLD_ROWS = 8
"""From this many rows (batch elements) on, the native kernels fold the input projection into each step's matmul;
with fewer, every step would re-read ``w_i`` for a row or two, so XLA projects the whole sequence first
(RESULTS step 13: LSTM B=1, T=15, I=250, H=208 forward 0.46 ms folded, against 0.33 ms for XLA's loop)."""

DEFAULT_UNROLL = {"cpu": 4}
"""Steps per loop iteration of the sequence-level LSTM/GRU loops (XLA's, and the native kernels' tangent scans)
for ``unroll=None``, by platform; 1 elsewhere (RESULTS step 3: on CPU 4 beats 1 by ~10-35% forward and ~5%
forward+backward). The sequential backend's default stays 1 (``lax.scan``'s)."""

PROJECTION_CHUNK = {"cpu": 16}
"""Steps projected together in the XLA LSTM's forward pass without differentiation, by platform (``None``: all
at once). RESULTS steps 11-12: 16 steps at a time inside the loop measured 20-25% faster on CPU at batch 16-64
than one projection of the whole sequence before it, since first touching a fresh ``(T, B, 4H)`` buffer costs
page faults."""

PROJECTION_CHUNK_MIN_ROWS = 128
"""Below this many rows per projected chunk (batch 1) the small matmuls lose, so the whole sequence is projected
at once (RESULTS step 12)."""

LINEAR_AUTO: dict[str, tuple[tuple[float, str, int], ...]] = {
    "cpu": ((float("inf"), "sequential", 0),),
    # Not measured (no accelerator was lent); one associative scan is the usual choice on GPUs and TPUs.
    "gpu": ((float("inf"), "associative", 0),),
    "tpu": ((float("inf"), "associative", 0),),
}
"""For linear-recurrence cells, per platform, ordered ``(max_steps, backend, chunk_size)`` rules; the first with
``T <= max_steps`` wins. From ``python -m benchmarks.linear --chunks 32`` and a sweep over chunks of 16, 64, 256
and 1024 steps (minGRU, B=8, H=256, T in 512, 4096, 16384; ``benchmarks/results/linear_cpu.md``): on a 2-core CPU,
stepping was fastest or within noise of the fastest in 5 of the 6 (T, fwd/fwd+bwd) cells, and fastest for
training at every T; among chunk sizes, 16 was fastest."""

DEFAULT_CHUNK = 16
"""Steps per chunk of the ``chunked`` backend when no rule of :data:`LINEAR_AUTO` names one."""


def linear_choice(num_steps: int, platform: str) -> tuple[str, int]:
    """``(backend, chunk_size)`` that ``auto`` runs a linear-recurrence cell with for ``num_steps`` steps."""
    for max_steps, backend, chunk in LINEAR_AUTO.get(platform, LINEAR_AUTO["gpu"]):
        if num_steps <= max_steps:
            return backend, chunk
    return "associative", 0


def sequence_unroll(unroll: int | bool | None, num_steps: int, platform: str) -> int:
    """The steps per iteration a sequence-level loop runs for ``scan``'s ``unroll``."""
    if unroll is None:
        return DEFAULT_UNROLL.get(platform, 1)
    if unroll is True:
        return max(num_steps, 1)
    return 1 if unroll is False else int(unroll)
