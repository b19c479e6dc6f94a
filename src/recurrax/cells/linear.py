"""Linear-recurrence cells, parallel in time: minGRU, minLSTM (Feng et al., 2024) and the LRU (Orvieto et al., 2023).

Their gates depend on the input only, so each step is ``s_t = a_t * s_{t-1} + b_t`` elementwise and
:func:`recurrax.scan` can run them with an associative scan (``backend="associative"`` or ``"chunked"``).
``step``/``transition`` stay the papers' sequential forms, for streaming and analysis.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrax import init as _init
from recurrax.cells._common import check_options, check_size, matmul, zeros_state
from recurrax.core import Array, Cell, LinearRecurrence, RNNState, Structure, constructor, make_cell


def _g(x: Array) -> Array:
    """The positive activation of the log-space minGRU/minLSTM: ``x + 1/2`` for ``x >= 0``, else ``sigmoid(x)``."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def _log_g(x: Array) -> Array:
    """``log g(x)``, computed without forming ``g`` where it is tiny."""
    return jnp.where(x >= 0, jnp.log(jnp.maximum(x, 0.0) + 0.5), -jax.nn.softplus(-x))


def _min_rnn(
    name: str,
    hidden_size: int,
    num_gates: int,
    sequential: Any,
    coefficients: Any,
    chrono_signs: tuple[int, ...],
    *,
    log_space: bool,
    chrono_t_max: float | None,
    init: str | _init.Scheme,
    use_bias: bool,
    param_dtype: Any,
    dtype: Any | None,
) -> Cell:
    """A minimal RNN whose ``num_gates`` input projections give ``h' = a * h + b`` (minGRU, minLSTM)."""
    check_size(name, "hidden_size", hidden_size)
    check_options(name, param_dtype=param_dtype, dtype=dtype, chrono_t_max=chrono_t_max, use_bias=use_bias)
    if not isinstance(log_space, bool):
        raise TypeError(f"{name}: `log_space` must be a bool, got {log_space!r}.")
    H = hidden_size
    scheme = _init.resolve(init, H)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        k_w, k_b, k_chrono = jax.random.split(key, 3)
        params = {"w_i": _init.gate_blocks(scheme.kernel, k_w, input_size, H, num_gates, param_dtype)}
        if use_bias:
            params["b"] = scheme.bias(k_b, (num_gates * H,), param_dtype)
        if chrono_t_max is not None:
            chrono = _init.chrono_bias(k_chrono, H, chrono_t_max, param_dtype)
            for gate, sign in enumerate(chrono_signs):
                if sign:
                    params["b"] = params["b"].at[gate * H : (gate + 1) * H].set(sign * chrono)
        return params

    def initial_state(params, batch_shape):
        return RNNState(h=zeros_state(batch_shape, H, params["w_i"].dtype))

    def project(params, x):
        z = matmul(x, params["w_i"], dtype)
        return z + params["b"] if use_bias else z

    def gates(z):
        # The recurrence runs in >= float32 whatever the compute dtype of the projection.
        return jnp.split(z.astype(jnp.promote_types(z.dtype, jnp.float32)), num_gates, axis=-1)

    def transition(params, state, z):
        return RNNState(h=sequential(state.h, *gates(z)).astype(state.h.dtype))

    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["w_i"].shape[0],
        structure=Structure(
            "linear",
            recurrence=LinearRecurrence(
                coefficients=lambda params, z: coefficients(*gates(z), log_space),
                carry=lambda state: state.h,
                state=lambda params, s, z: RNNState(h=s),
                log_space=log_space,
            ),
        ),
    )


@constructor
def min_gru(
    hidden_size: int,
    *,
    log_space: bool = True,
    init: str | _init.Scheme = "pytorch",
    chrono_t_max: float | None = None,
    use_bias: bool = True,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"); state ``RNNState(h)``, gate order z, h̃.

    The gates see the input only, so the recurrence is linear in ``h``::

        u = σ(k_z),  h̃ = g(k_h),  h' = (1 - u) ⊙ h + u ⊙ h̃,     [k_z, k_h] = x W_i + b
        g(x) = x + 1/2 (x >= 0), σ(x) (x < 0)                     (keeps h̃ > 0 for the log-space scan)

    ``step`` computes the line above. In parallel (``recurrax.scan(..., backend="associative")``) the
    coefficients are, with ``log_space`` (the paper's log-space form), ``log a = -softplus(k_z)`` and
    ``log b = -softplus(-k_z) + log g(k_h)``; otherwise ``a = 1 - u`` and ``b = u ⊙ h̃``.

    Params: ``w_i: (I, 2H)``, ``b: (2H,)``.

    Args:
      hidden_size: ``H``.
      log_space: run the parallel scan on logarithms (stable over any length; a little slower).
      init: an :mod:`recurrax.init` scheme name or Scheme (its kernel and bias initialisers are used).
      chrono_t_max: chrono initialisation (Tallec & Ollivier, 2018) of the update-gate bias,
        ``b_z = -log U(1, T_max - 1)``, so that memory timescales spread up to ``T_max`` steps.
      use_bias: whether ``b`` exists.
      param_dtype: dtype of the params and the state.
      dtype: compute dtype of the input matmul, accumulated in float32.
    """

    def sequential(h, k_z, k_h):
        u = jax.nn.sigmoid(k_z)
        return (1.0 - u) * h + u * _g(k_h)

    def coefficients(k_z, k_h, log_space):
        if log_space:
            return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + _log_g(k_h)
        return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * _g(k_h)

    return _min_rnn(
        "min_gru",
        hidden_size,
        2,
        sequential,
        coefficients,
        (-1, 0),
        log_space=log_space,
        chrono_t_max=chrono_t_max,
        init=init,
        use_bias=use_bias,
        param_dtype=param_dtype,
        dtype=dtype,
    )


@constructor
def min_lstm(
    hidden_size: int,
    *,
    log_space: bool = True,
    init: str | _init.Scheme = "pytorch",
    chrono_t_max: float | None = None,
    use_bias: bool = True,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""minLSTM (Feng et al., 2024); state ``RNNState(h)`` (no cell state, no output gate), gate order f, i, h̃.

    ::

        f = σ(k_f),  i = σ(k_i),  h̃ = g(k_h),     [k_f, k_i, k_h] = x W_i + b
        f' = f / (f + i),  i' = i / (f + i),  h' = f' ⊙ h + i' ⊙ h̃

    with ``g`` as in :func:`min_gru`; ``chrono_t_max`` sets ``b_f = log U(1, T_max - 1)`` and ``b_i = -b_f``.
    In log space the coefficients are ``log a = -softplus(d)`` and
    ``log b = -softplus(-d) + log g(k_h)`` with ``d = softplus(-k_f) - softplus(-k_i)`` (= ``log i - log f``).

    Params: ``w_i: (I, 3H)``, ``b: (3H,)``. Arguments as :func:`min_gru`.
    """

    def sequential(h, k_f, k_i, k_h):
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        return f / (f + i) * h + i / (f + i) * _g(k_h)

    def coefficients(k_f, k_i, k_h, log_space):
        d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
        if log_space:
            return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(k_h)
        return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * _g(k_h)

    return _min_rnn(
        "min_lstm",
        hidden_size,
        3,
        sequential,
        coefficients,
        (1, -1, 0),
        log_space=log_space,
        chrono_t_max=chrono_t_max,
        init=init,
        use_bias=use_bias,
        param_dtype=param_dtype,
        dtype=dtype,
    )


class LRUState(NamedTuple):
    """State of an LRU: the complex recurrent state ``x: (*batch, N)`` and the output ``y: (*batch, H)``.

    ``y`` is kept in the state so that ``cell.output(state) = state.y`` needs no params.
    """

    x: Array
    y: Array


@constructor
def lru(
    hidden_size: int,
    state_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    param_dtype: Any = jnp.float32,
    dtype: Any | None = None,
) -> Cell:
    r"""Linear Recurrent Unit (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

    A complex diagonal linear recurrence with a real read-out; state ``LRUState(x, y)``::

        λ = exp(-exp(ν_log) + i exp(θ_log)),   γ = exp(γ_log)        (|λ| < 1 for any ν_log)
        x' = λ ⊙ x + γ ⊙ (u B),   y' = Re(x' C) + u D

    Initialisation (the paper's): ``λ`` uniform on the ring ``r_min <= |λ| <= r_max`` of the complex plane,
    phase uniform in ``[0, max_phase]``; ``γ = sqrt(1 - |λ|^2)`` (normalises the state's variance);
    ``B ~ CN(0, 1/I)`` (real and imaginary parts ``N(0, 1/(2I))``), ``C ~ CN(0, 1/N)``, ``D ~ N(0, 1)``.

    Params: ``nu_log, theta_log, gamma_log: (N,)``; ``b_re, b_im: (I, N)`` (the paper's ``B`` transposed);
    ``c_re, c_im: (N, H)`` (``C`` transposed); ``d: (H,)`` (the paper's diagonal ``D``) when ``I == H``,
    else a dense ``(I, H)``.

    Args:
      hidden_size: ``H``, the output size.
      state_size: ``N``, the number of complex state units.
      r_min, r_max: radii of the initial ring, ``0 <= r_min <= r_max <= 1``, ``r_min < 1``; ``|λ|^2`` is drawn
        uniformly from ``[r_min^2, r_max^2)``, so ``|λ| < 1`` (stable) for every draw.
      max_phase: largest initial phase of ``λ``, in ``(0, 2π]``.
      param_dtype: real dtype of the params (the state ``x`` is its complex counterpart).
      dtype: compute dtype of the matmuls with ``B``, ``C`` and a dense ``D`` (e.g. ``jnp.bfloat16``, on the real
        and imaginary parts), accumulated in float32; ``λ``, the recurrence and the state stay in ``param_dtype``.
    """
    name = "lru"
    check_size(name, "hidden_size", hidden_size)
    check_size(name, "state_size", state_size)
    check_options(name, param_dtype=param_dtype, dtype=dtype)
    if not (0.0 <= r_min <= r_max <= 1.0 and r_min < 1.0):
        raise ValueError(
            f"{name}: the initial ring must satisfy 0 <= r_min <= r_max <= 1 and r_min < 1, so that every "
            f"|λ| < 1 (a stable recurrence), got r_min={r_min!r}, r_max={r_max!r}."
        )
    if not (0.0 < max_phase <= 2 * math.pi):
        raise ValueError(f"{name}: `max_phase` must lie in (0, 2π], got {max_phase!r}.")
    H, N = hidden_size, state_size
    complex_dtype = jnp.result_type(param_dtype, jnp.complex64)

    def init_fn(key, input_size: int):
        check_size(name, "input_size", input_size)
        I = input_size
        k_nu, k_th, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 7)
        u1 = jax.random.uniform(k_nu, (N,), param_dtype)
        u2 = jax.random.uniform(k_th, (N,), param_dtype)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        modulus = jnp.exp(-jnp.exp(nu_log))
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": jnp.log(jnp.sqrt(1.0 - modulus**2)),
            "b_re": jax.random.normal(k_bre, (I, N), param_dtype) / math.sqrt(2 * I),
            "b_im": jax.random.normal(k_bim, (I, N), param_dtype) / math.sqrt(2 * I),
            "c_re": jax.random.normal(k_cre, (N, H), param_dtype) / math.sqrt(N),
            "c_im": jax.random.normal(k_cim, (N, H), param_dtype) / math.sqrt(N),
            "d": jax.random.normal(k_d, (H,) if I == H else (I, H), param_dtype),
        }

    def initial_state(params, batch_shape):
        dtype = params["c_re"].dtype
        return LRUState(
            x=zeros_state(batch_shape, N, jnp.result_type(dtype, jnp.complex64)), y=zeros_state(batch_shape, H, dtype)
        )

    def project(params, u):
        # z = [Re(γ u B), Im(γ u B), u D]: real, so the projection keeps the input's real dtype.
        gamma = jnp.exp(params["gamma_log"])
        d = params["d"]
        du = u * d if d.ndim == 1 else matmul(u, d, dtype)
        u_re, u_im = matmul(u, params["b_re"], dtype), matmul(u, params["b_im"], dtype)
        return jnp.concatenate([u_re * gamma, u_im * gamma, du], axis=-1).astype(jnp.result_type(u, gamma))

    def eigenvalues(params):
        return jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"])).astype(complex_dtype)

    def coefficients(params, z):
        bu = jax.lax.complex(z[..., :N], z[..., N : 2 * N]).astype(complex_dtype)
        return jnp.broadcast_to(eigenvalues(params), bu.shape), bu

    def read_out(params, x, z):
        y = matmul(x.real, params["c_re"], dtype) - matmul(x.imag, params["c_im"], dtype) + z[..., 2 * N :]
        return LRUState(x=x, y=y.astype(params["c_re"].dtype))

    def transition(params, state, z):
        a, b = coefficients(params, z)
        return read_out(params, (a * state.x + b).astype(state.x.dtype), z)

    return make_cell(
        name,
        init=init_fn,
        initial_state=initial_state,
        project=project,
        transition=transition,
        input_size=lambda params: params["b_re"].shape[0],
        output=lambda state: state.y,
        structure=Structure(
            "linear",
            recurrence=LinearRecurrence(coefficients=coefficients, carry=lambda state: state.x, state=read_out),
        ),
    )
