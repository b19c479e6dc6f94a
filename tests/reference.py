"""Independent references for the core tests: the cell equations in NumPy and a plain-loop runner.

The equations are written from the papers and the cells' documented layouts (gate order i, f, g, o
for the LSTM; r, z, n for the GRU; f, n for the MGU), one unit per gate slice, in float64. Nothing
here calls recurrax to compute a value: recurrax is only imported to name the cells under test.

States are tuples of arrays in field order: ``(h,)`` or ``(h, c)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import recurrax as rx

# --------------------------------------------------------------------------------------- equations


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def soft_sign(x):
    return x / (1.0 + np.abs(x))


def mm(a, w, dtype=None):
    """``a @ w`` in float64; with a low-precision compute ``dtype`` both operands are rounded to it first."""
    if dtype is not None:
        low = ml_dtypes.bfloat16 if np.dtype(dtype) == np.dtype(jnp.bfloat16) else np.dtype(dtype)
        a = np.asarray(a).astype(low).astype(np.float64)
        w = np.asarray(w).astype(low).astype(np.float64)
    return np.asarray(a, np.float64) @ np.asarray(w, np.float64)


def layer_norm(x, scale, bias=None, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * scale
    return y if bias is None else y + bias


def elman(p, state, x, *, activation=np.tanh, dtype=None):
    """``h' = act(x W_i + b + h W_h)``."""
    (h,) = state
    a = mm(x, p["w_i"], dtype) + mm(h, p["w_h"], dtype)
    if "b" in p:
        a = a + p["b"]
    return (activation(a),)


def lstm(p, state, x, *, cell_clip=None, dtype=None, gate=sigmoid, act=np.tanh):
    """LSTM (Hochreiter & Schmidhuber) with the variants present in ``p``.

    Peepholes (``w_peep`` rows i, f, o: i and f see c, o sees c'), LSTMP (``w_proj``), layer norm
    (``ln_*``: LN over all 4H gate pre-activations of each side, gain only, then the gate bias; LN of
    c' with gain and bias before the output tanh), clipping of c', no bias (no ``b``).
    """
    h, c = state
    H = c.shape[-1]
    zx, zh = mm(x, p["w_i"], dtype), mm(h, p["w_h"], dtype)
    if "ln_i" in p:
        zx, zh = layer_norm(zx, p["ln_i"]), layer_norm(zh, p["ln_h"])
    a = zx + zh + p.get("b", 0.0)
    a_i, a_f, a_g, a_o = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
    if "w_peep" in p:
        a_i = a_i + p["w_peep"][0] * c
        a_f = a_f + p["w_peep"][1] * c
    c_new = gate(a_f) * c + gate(a_i) * act(a_g)
    if cell_clip is not None:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    if "w_peep" in p:
        a_o = a_o + p["w_peep"][2] * c_new
    c_read = layer_norm(c_new, p["ln_c_scale"], p["ln_c_bias"]) if "ln_c_scale" in p else c_new
    h_new = gate(a_o) * act(c_read)
    if "w_proj" in p:
        h_new = mm(h_new, p["w_proj"], dtype)
    return (h_new, c_new)


def gru(p, state, x, *, reset_after=True, dtype=None, gate=sigmoid, act=np.tanh, h_mask=None):
    """GRU (Cho et al., 2014); ``reset_after`` as cuDNN/PyTorch, otherwise the original form. ``h_mask``: recurrent
    dropout, ``h * h_mask`` in the recurrent matmuls, ``h`` in the update."""
    (h,) = state
    H = h.shape[-1]
    h_in = h if h_mask is None else h * h_mask
    b = p.get("b", np.zeros(p["w_i"].shape[-1]))
    zx = mm(x, p["w_i"], dtype) + b
    w_hr, w_hz, w_hn = p["w_h"][:, :H], p["w_h"][:, H : 2 * H], p["w_h"][:, 2 * H :]
    r = gate(zx[..., :H] + mm(h_in, w_hr, dtype))
    u = gate(zx[..., H : 2 * H] + mm(h_in, w_hz, dtype))
    if reset_after:
        n = act(zx[..., 2 * H :] + r * (mm(h_in, w_hn, dtype) + p.get("b_hn", 0.0)))
    else:
        n = act(zx[..., 2 * H :] + mm(r * h_in, w_hn, dtype))
    return ((1.0 - u) * n + u * h,)


def mgu(p, state, x, *, dtype=None, gate=sigmoid, act=np.tanh, h_mask=None):
    """Minimal gated unit (Zhou et al., 2016); ``h_mask`` as for :func:`gru`."""
    (h,) = state
    H = h.shape[-1]
    h_in = h if h_mask is None else h * h_mask
    zx = mm(x, p["w_i"], dtype) + p.get("b", 0.0)
    f = gate(zx[..., :H] + mm(h_in, p["w_h"][:, :H], dtype))
    n = act(zx[..., H:] + mm(f * h_in, p["w_h"][:, H:], dtype))
    return ((1.0 - f) * h + f * n,)


# ------------------------------------------------------------------------------------------ runner


def run(step, params, xs, state0, *, lengths=None, reverse=False, include_initial=False):
    """Runs ``step`` over each sequence of ``xs: (*batch, T, I)`` alone, in a Python loop.

    Each sequence consumes only its first ``lengths[b]`` steps (backwards with ``reverse``). Padded
    outputs are zero; a padded position's state is the last valid one forward, the initial one in
    reverse (nothing consumed yet). ``states`` holds the state after consuming ``xs[t]`` at ``t``;
    with ``include_initial`` the initial state is added first (forward) or last (reverse).

    Returns: ``(final, ys, states)``: tuples of ``(*batch, F)`` arrays, ``(*batch, T, O)``, tuples
    of ``(*batch, T or T + 1, F)`` arrays.
    """
    xs = np.asarray(xs, np.float64)
    batch, T = xs.shape[:-2], xs.shape[-2]
    state0 = tuple(np.asarray(s, np.float64) for s in state0)
    finals, ys, states = {}, {}, {}
    for idx in np.ndindex(*batch):
        L = T if lengths is None else int(np.asarray(lengths)[idx])
        s0 = tuple(leaf[idx] for leaf in state0)
        s, seq = s0, [None] * T
        for t in range(L)[::-1] if reverse else range(L):
            s = step(params, s, xs[idx][t])
            seq[t] = s
        seq[L:] = [s0 if reverse else s] * (T - L)
        out = [seq[t][0] if t < L else np.zeros_like(s0[0]) for t in range(T)]
        if include_initial:
            seq = [*seq, s0] if reverse else [s0, *seq]
        finals[idx], ys[idx], states[idx] = s, np.stack(out), seq

    def gather(per_sequence):
        stacked = np.stack([per_sequence[idx] for idx in np.ndindex(*batch)])
        return stacked.reshape(*batch, *stacked.shape[1:])

    fields = range(len(state0))
    final = tuple(gather({i: s[k] for i, s in finals.items()}) for k in fields)
    states_out = tuple(gather({i: np.stack([s[k] for s in seq]) for i, seq in states.items()}) for k in fields)
    return final, gather(ys), states_out


# ---------------------------------------------------------------------------------- cells under test


class Case(NamedTuple):
    """A cell factory ``make(H, **kwargs) -> Cell`` and its reference ``step(p, state, x, dtype=None)``."""

    make: Callable[..., rx.Cell]
    step: Callable[..., tuple]


def _proj(H: int) -> int | None:
    # PyTorch (and recurrax) need proj_size < hidden_size, so at H = 1 the case has no projection.
    return H // 2 or None


CLIP = 0.5
CASES: dict[str, Case] = {
    "elman": Case(rx.elman, elman),
    "elman_relu": Case(
        partial(rx.elman, activation=jax.nn.relu), partial(elman, activation=lambda a: np.maximum(a, 0))
    ),
    "elman_linear": Case(partial(rx.elman, activation=lambda a: a), partial(elman, activation=lambda a: a)),
    "elman_nobias": Case(partial(rx.elman, use_bias=False), elman),
    "lstm": Case(rx.lstm, lstm),
    "lstm_peephole": Case(partial(rx.lstm, peephole=True), lstm),
    "lstm_proj": Case(lambda H, **kw: rx.lstm(H, proj_size=_proj(H), **kw), lstm),
    "lstm_layer_norm": Case(partial(rx.lstm, layer_norm=True), lstm),
    "lstm_clip": Case(partial(rx.lstm, cell_clip=CLIP), partial(lstm, cell_clip=CLIP)),
    "lstm_nobias": Case(partial(rx.lstm, use_bias=False), lstm),
    "lstm_all": Case(
        lambda H, **kw: rx.lstm(H, peephole=True, proj_size=_proj(H), layer_norm=True, cell_clip=CLIP, **kw),
        partial(lstm, cell_clip=CLIP),
    ),
    "gru": Case(rx.gru, gru),
    "gru_nobias": Case(partial(rx.gru, use_bias=False), gru),
    "gru_reset_before": Case(partial(rx.gru, reset_after=False), partial(gru, reset_after=False)),
    "gru_reset_before_nobias": Case(
        partial(rx.gru, reset_after=False, use_bias=False), partial(gru, reset_after=False)
    ),
    "mgu": Case(rx.mgu, mgu),
    # Other gate and candidate functions (Flax's gate_fn / activation_fn, Keras's recurrent_activation / activation).
    "lstm_activations": Case(
        partial(rx.lstm, gate_activation=jax.nn.hard_sigmoid, activation=jax.nn.soft_sign),
        partial(lstm, gate=hard_sigmoid, act=soft_sign),
    ),
    "gru_activations": Case(
        partial(rx.gru, gate_activation=jax.nn.hard_sigmoid, activation=jax.nn.relu),
        partial(gru, gate=hard_sigmoid, act=relu),
    ),
    "mgu_nobias_activations": Case(
        partial(rx.mgu, use_bias=False, gate_activation=jax.nn.hard_sigmoid, activation=jax.nn.soft_sign),
        partial(mgu, gate=hard_sigmoid, act=soft_sign),
    ),
}
# One representative per family (plus the plain LSTM/GRU and a variant-heavy LSTM), for costlier tests.
FAMILIES = ["elman", "lstm", "lstm_all", "gru", "gru_reset_before", "mgu"]


def random_params(cell: rx.Cell, seed: int, input_size: int) -> dict:
    """Params of ``cell``'s layout with every leaf ``~ N(0, 0.5^2)`` (so LN gains, peepholes and biases all matter).

    Drawn with NumPy from the shapes alone: no compilation per test.
    """
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    return _normal(shapes, seed, 0.5)


def random_state(cell: rx.Cell, params, batch_shape, seed: int, scale: float = 1.0):
    """A state of ``cell``'s structure and dtype, ``(*batch_shape, F)`` leaves ``~ N(0, scale^2)``."""
    return _normal(jax.eval_shape(lambda p: cell.initial_state(p, tuple(batch_shape)), params), seed, scale)


def random_inputs(shape, seed: int, dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _normal(shapes, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def to_numpy(tree):
    """Every leaf as a float64 NumPy array (a state NamedTuple becomes a plain tuple)."""
    if isinstance(tree, dict):
        return {k: np.asarray(v, np.float64) for k, v in tree.items()}
    return tuple(np.asarray(v, np.float64) for v in tree)
