"""What every exporter asks of a recurrax cell first: which of recurrax's constructors built it, and with what."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from recurrax.cells._common import DEFAULT_ACTIVATIONS
from recurrax.core import Cell, built_with
from recurrax.layers import Layer

PLAIN_LSTM: dict[str, Any] = {
    "peephole": False,
    "proj_size": None,
    "layer_norm": False,
    "cell_clip": None,
    "dtype": None,
    **DEFAULT_ACTIVATIONS,
}
"""The options of :func:`recurrax.lstm` that a peer's plain LSTM cell fixes (the others only shape ``init``)."""


def constructor_options(
    cell: Cell, fn: str, library: str, converts: Collection[str], listed: str
) -> tuple[str, dict[str, Any]]:
    """``(constructor name, its arguments)`` of ``cell`` when one of recurrax's ``converts`` cells built it and no
    function was replaced since; raises a ``ValueError`` beginning with ``fn`` that says why not.

    Args:
      library: what the error says lacks the cell (``"torch"``, ``"Haiku"``...).
      listed: the cells that convert, as the error lists them (``"the lstm and gru cells"``).
    """
    built = built_with(cell)
    # By module too: a constructor of the same name elsewhere need not compute what recurrax's does.
    if built is not None and built[0] in converts and cell.spec.key[0] == f"recurrax.cells.{built[0]}":
        return built
    if cell.name not in converts:
        raise ValueError(f"{fn}: {library} has no equivalent of recurrax's `{cell.name}` cell; {listed} convert.")
    raise ValueError(
        f"{fn}: cannot tell what this `{cell.name}` cell computes: its functions are not the ones "
        f"recurrax.{cell.name} builds (a function replaced with `_replace`, a wrapper, or an unhashable constructor "
        "argument)."
    )


def single_cell(obj: Cell | Layer) -> Cell | None:
    """``obj`` as a cell when it is one or ``as_layer`` of one (as built), else ``None``."""
    if isinstance(obj, Cell):
        return obj
    built = built_with(obj)
    return built[1]["cell"] if built is not None and built[0] == "_cell_layer" else None
