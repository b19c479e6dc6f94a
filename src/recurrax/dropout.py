"""Dropout inside the recurrence: variational input and recurrent dropout, and zoneout.

* **Variational dropout** (Gal & Ghahramani, 2016; Keras's ``dropout`` / ``recurrent_dropout``): one mask per
  sequence, the same at every step, on the inputs ``x`` and on ``h`` where it enters the recurrent matmul;
  inverted (kept units scaled by ``1 / (1 - rate)``), so evaluation is the plain cell.
* **Zoneout** (Krueger et al., 2017): at each step each unit of ``h`` (and, separately, of ``c``) keeps its
  previous value with probability ``zoneout_h`` (``zoneout_c``), a fresh mask per step; in evaluation the
  expectation, ``s' = z s + (1 - z) s_new``.

Masks are drawn from an explicit key; without one (evaluation) no unit is dropped. Input dropout changes only
``xs``, so the call keeps its backend (the native and XLA LSTM/GRU kernels included); recurrent dropout and
zoneout change the cell's transition, which then runs on ``sequential`` (or ``newton``).

Recurrent dropout masks ``h`` where it enters the recurrent matmuls and nowhere else (the GRU's and MGU's update
mixes the unmasked ``h``, which a mask there would erase): it runs the cell's declared masked transition
(:class:`recurrax.Structure` ``masked``), which ``lstm``, ``gru``, ``mgu`` and ``elman`` have; other cells, and
cells whose functions were replaced, are refused by name (zoneout works on every cell with an ``h`` field).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax.core import Array, Cell, Params, PRNGKey, State, structure_of


class RecurrentDropout(NamedTuple):
    """Rates of dropout inside the recurrence, each in ``[0, 1)``; see :mod:`recurrax.dropout`.

    Attributes:
      input: variational dropout of the inputs ``x`` (one mask per sequence, over its features).
      recurrent: variational dropout of ``h`` where it enters the recurrent matmul (one mask per sequence).
      zoneout_h: probability that a unit of ``h`` keeps its previous value at a step.
      zoneout_c: the same for the LSTM's cell state ``c``.
    """

    input: float = 0.0
    recurrent: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0


def check(name: str, dropout: Any, cell: Cell) -> RecurrentDropout:
    """``dropout`` checked against ``cell`` (rates in ``[0, 1)``, options the cell can take), or raises."""
    if not isinstance(dropout, RecurrentDropout):
        raise TypeError(f"{name}: `dropout` must be a recurrax.RecurrentDropout, got {type(dropout).__name__}.")
    for field, rate in dropout._asdict().items():
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0):
            raise ValueError(f"{name}: `dropout.{field}` must be a rate in [0, 1), got {rate!r}.")
    if dropout.recurrent and _masked(cell) is None:
        raise ValueError(
            f"{name}: `dropout.recurrent` masks `h` where it enters the recurrent matmul, which the {cell.name} cell "
            "does not declare (recurrax's lstm, gru, mgu and elman do, while their functions are as built); use "
            "zoneout_h there."
        )
    return dropout


def regularized(
    cell: Cell,
    params: Params,
    xs: Array,
    state: State,
    dropout: RecurrentDropout,
    key: PRNGKey | None,
) -> tuple[Cell, Array]:
    """``(cell, xs)`` to scan instead of the given ones, ``xs: (T, *batch, I)`` time-major, ``state`` the initial
    state (its batch shape gives the masks'). Without a key only zoneout's expectation changes the cell."""
    zoneout = _zoneout(dropout)
    _check_fields(cell, state, zoneout)
    if key is None:
        return in_evaluation(cell, dropout), xs
    k_in, k_rec, k_zone = jax.random.split(key, 3)
    if dropout.input:
        keep = jax.random.bernoulli(k_in, 1.0 - dropout.input, xs.shape[1:])  # one mask per sequence
        xs = jnp.where(keep, xs / (1.0 - dropout.input), 0.0).astype(xs.dtype)
    rec_mask = None
    if dropout.recurrent:
        h = state.h
        keep = jax.random.bernoulli(k_rec, 1.0 - dropout.recurrent, h.shape)
        rec_mask = jnp.where(keep, 1.0 / (1.0 - dropout.recurrent), 0.0).astype(h.dtype)
    if rec_mask is None and not zoneout:
        return cell, xs
    # Zoneout's masks are fresh at every step: drawn for all steps here and carried in as extra input features,
    # so every backend that runs the cell's functions sees them step by step (a closed-over (T, ...) array would not).
    widths = {field: getattr(state, field).shape[-1] for field in zoneout}
    zone = [
        jax.random.bernoulli(k, rate, (xs.shape[0], *getattr(state, field).shape)).astype(xs.dtype)
        for (field, rate), k in zip(zoneout.items(), jax.random.split(k_zone, len(zoneout)))
    ]
    num_inputs = xs.shape[-1]
    width = jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)).shape[-1]

    def project(params, x):
        return jnp.concatenate([cell.project(params, x[..., :num_inputs]), x[..., num_inputs:]], axis=-1)

    masked_transition = _masked(cell)

    def transition(params, s, z):
        z, masks = z[..., :width], z[..., width:]
        new = cell.transition(params, s, z) if rec_mask is None else masked_transition(params, s, z, rec_mask)
        start, kept = 0, {}
        for field, size in widths.items():
            kept[field] = masks[..., start : start + size].astype(bool)
            start += size
        return new._replace(**{f: jnp.where(kept[f], getattr(s, f), getattr(new, f)) for f in kept})

    xs = jnp.concatenate([xs, *zone], axis=-1) if zone else xs
    return cell._replace(project=project, transition=transition), xs


def in_evaluation(cell: Cell, dropout: RecurrentDropout) -> Cell:
    """The cell that ``dropout`` makes of ``cell`` without a key: ``cell`` itself, or with zoneout its expectation,
    ``s' = z s + (1 - z) s_new`` per field (what a layer computes in evaluation, and its one-step form)."""
    rates = _zoneout(dropout)
    if not rates:
        return cell

    def transition(params, s, z):
        _check_fields(cell, s, rates)
        new = cell.transition(params, s, z)
        return new._replace(**{f: rate * getattr(s, f) + (1.0 - rate) * getattr(new, f) for f, rate in rates.items()})

    return _with_transition(cell, transition)


def _zoneout(dropout: RecurrentDropout) -> dict[str, float]:
    """The zoneout rates in use, by state field."""
    rates = {"h": dropout.zoneout_h, "c": dropout.zoneout_c}
    return {field: rate for field, rate in rates.items() if rate}


def _check_fields(cell: Cell, state: State, zoneout: dict[str, float]) -> None:
    fields = getattr(state, "_fields", ())
    for field in zoneout:
        if field not in fields:
            raise ValueError(
                f"{cell.name}: `dropout.zoneout_{field}` needs a state field `{field}`, but the {cell.name} cell's "
                f"state has {list(fields)}."
            )


def _masked(cell: Cell) -> Any:
    """The cell's declared transition with a recurrent-dropout mask on ``h``, or ``None``."""
    structure = structure_of(cell)
    return None if structure is None else structure.masked


def _with_transition(cell: Cell, transition: Any) -> Cell:
    # The structure stays: its kind no longer applies (`structure_of` sees the new function), its layout still does.
    return cell._replace(transition=transition)
