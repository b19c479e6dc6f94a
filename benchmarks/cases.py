"""What is measured: cells x sizes x modes, grouped in suites, and the filters that pick from them."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

BASE_CELLS = ("lstm", "gru", "elman", "lstm2")
"""``lstm2`` is a two-layer stacked LSTM."""

VARIANTS = {
    "ragged": "right-padded batch, `lengths` spread evenly over [T/2, T]",
    "equal": "`lengths` given, all equal to T",
    "remat": "`remat=True`",
    "resets1": "`resets` at 1% of the steps (episode boundaries, drawn at random with a fixed seed)",
    "resets10": "`resets` at 10% of the steps",
}
"""Call options measured beside the plain call, as cells named ``<cell>:<variant>`` (e.g. ``lstm:ragged``)."""

CELLS = (*BASE_CELLS, *(f"{c}:{v}" for c in ("lstm", "gru") for v in VARIANTS))


def base(cell: str) -> str:
    """``lstm`` for ``lstm:ragged``."""
    return cell.split(":")[0]


def variant(cell: str) -> str | None:
    """``ragged`` for ``lstm:ragged``, ``None`` for a plain cell."""
    return cell.split(":")[1] if ":" in cell else None


def lengths(cell: str, batch: int, steps: int) -> list[int] | None:
    """The ``lengths`` a variant passes (``None``: none): ragged ones spread evenly over ``[T/2, T]``."""
    kind = variant(cell)
    if kind == "equal":
        return [steps] * batch
    if kind == "ragged":
        return [steps - (steps // 2) * i // max(batch - 1, 1) for i in range(batch)]
    return None


def resets(cell: str, batch: int, steps: int) -> list[list[bool]] | None:
    """The ``resets`` a variant passes (``None``: none), ``(batch, steps)``: each step a reset with the
    variant's probability, the same draw in every run."""
    kind = variant(cell)
    if kind is None or not kind.startswith("resets"):
        return None
    rate = int(kind.removeprefix("resets")) / 100
    draw = random.Random(f"{kind}-{batch}-{steps}")
    return [[draw.random() < rate for _ in range(steps)] for _ in range(batch)]


MODES = ("fwd", "fwd+bwd", "step")
"""``fwd``: outputs of a whole sequence; ``fwd+bwd``: gradient of ``sum(outputs)`` w.r.t. params and
inputs; ``step``: one-step latency (online use)."""

GATES = {"lstm": 4, "gru": 3, "elman": 1, "lstm2": 4}
LAYERS = {"lstm": 1, "gru": 1, "elman": 1, "lstm2": 2}


@dataclasses.dataclass(frozen=True)
class Size:
    """Batch ``B``, steps ``T``, input features ``I`` and hidden units ``H``."""

    batch: int
    steps: int
    inputs: int
    hidden: int

    @property
    def label(self) -> str:
        return f"b{self.batch}-t{self.steps}-i{self.inputs}-h{self.hidden}"


@dataclasses.dataclass(frozen=True)
class Case:
    """One cell at one size."""

    cell: str
    size: Size

    @property
    def label(self) -> str:
        return f"{self.cell}/{self.size.label}"

    @property
    def layers(self) -> int:
        return LAYERS[base(self.cell)]

    def flops(self, mode: str) -> float:
        """``2 * gates * H * (I + H) * B * T`` per layer (``T = 1`` for ``step``); ``fwd+bwd`` counts 3x."""
        s = self.size
        steps = 1 if mode == "step" else s.steps
        total = 0.0
        for layer in range(self.layers):
            inputs = s.inputs if layer == 0 else s.hidden
            total += 2.0 * GATES[base(self.cell)] * s.hidden * (inputs + s.hidden) * s.batch * steps
        return 3.0 * total if mode == "fwd+bwd" else total


_CPU_SIZES = (
    Size(1, 1000, 64, 64),
    Size(1, 15, 250, 200),
    Size(32, 128, 256, 256),
    Size(16, 150, 256, 256),
    Size(64, 100, 512, 512),
)
_DEEPBENCH = (*(Size(b, 25, h, h) for h in (512, 1024, 2048) for b in (16, 64, 128)), Size(16, 1024, 768, 768))

SUITES: dict[str, tuple[Case, ...]] = {
    "cpu": (
        *(Case(c, s) for c in ("lstm", "gru", "elman") for s in _CPU_SIZES),
        Case("lstm2", Size(32, 100, 256, 256)),
        *(Case(f"{c}:{v}", Size(32, 128, 256, 256)) for c in ("lstm", "gru") for v in VARIANTS),
    ),
    "gpu": tuple(Case(c, s) for c in ("lstm", "gru") for s in _DEEPBENCH),
    "smoke": tuple(Case(c, Size(2, 5, 4, 8)) for c in CELLS),
    "options": tuple(Case(c, Size(32, 128, 256, 256)) for c in ("lstm", "gru", *CELLS[len(BASE_CELLS) :])),
}
"""The issue's default CPU matrix, the GPU (DeepBench) matrix, a tiny one for tests, and ``options`` (the call
options of the CPU matrix alone, beside the plain calls they compare with)."""


def select(
    suite: str,
    *,
    cells: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
) -> tuple[tuple[Case, ...], tuple[str, ...]]:
    """The cases of ``suite`` restricted to ``cells`` and size labels ``sizes``, and the ``modes``.

    Raises ``ValueError`` naming the valid choices for an unknown suite, cell, size or mode, and when
    the filters leave nothing to run.
    """
    _check("suite", [suite], SUITES)
    cases = SUITES[suite]
    if cells:
        _check("cell", cells, CELLS)
        cases = tuple(c for c in cases if c.cell in cells)
    if sizes:
        _check("size", sizes, sorted({c.size.label for c in SUITES[suite]}), where=f" in suite {suite!r}")
        cases = tuple(c for c in cases if c.size.label in sizes)
    if modes:
        _check("mode", modes, MODES)
    if not cases:
        raise ValueError(f"no case of suite {suite!r} has cell in {list(cells or [])} and size in {list(sizes or [])}.")
    return cases, tuple(modes or MODES)


def _check(what: str, given: Sequence[str], valid, where: str = "") -> None:
    unknown = [g for g in given if g not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}{where}; valid: {', '.join(valid)}.")
