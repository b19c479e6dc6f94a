"""The cuDNN backend's weight layout and plumbing, checked on CPU against ``jax.experimental.rnn.lstm_ref``.

``cudnn_lstm`` itself needs a GPU; here its packed weights are unpacked by JAX's own ``unpack_lstm_weights`` and
run by JAX's reference LSTM (``lstm_ref``, the equations cuDNN implements), and the backend's ``run`` is driven
with ``lstm_ref`` in cuDNN's place. The reference for values is ``backend="sequential"``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import recurrax as rx
from recurrax import backends
from recurrax.backends.gpu import cudnn

B, T, I, H = 3, 6, 4, 5
TOL = dict(atol=1e-5, rtol=1e-5)


def _reference_lstm(xs, h0, c0, weights, lengths):
    """``cudnn.cudnn_lstm``'s contract, computed by JAX's reference from the unpacked weights."""
    unpacked = rnn.unpack_lstm_weights(weights, xs.shape[-1], h0.shape[-1], 1, False)
    ys, h, c = rnn.lstm_ref(xs, h0[None], c0[None], *unpacked, lengths, xs.shape[-1], h0.shape[-1], 1, 0.0, False)
    return ys, h[0], c[0]


def _problem(use_bias=True):
    cell = rx.lstm(H, use_bias=use_bias)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(jax.random.key(2), s.shape), cell.initial_state(params, (B,))
    )
    return cell, params, xs, state


@pytest.mark.parametrize("use_bias", [True, False])
def test_packed_weights_run_by_lstm_ref_equal_the_cell(use_bias):
    cell, params, xs, state = _problem(use_bias)
    full = jnp.full((B,), T, jnp.int32)
    ys, h, c = _reference_lstm(xs, state.h, state.c, cudnn.pack(params), full)
    final, want = rx.scan(cell, params, xs, state, backend="sequential")
    chex.assert_trees_all_close((ys, h, c), (want, final.h, final.c), **TOL)
    assert cudnn.pack(params).shape == (rnn.get_num_params_in_lstm(I, H, 1, False),)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_backend_run_with_lstm_ref_equals_sequential_for_ragged_lengths(reverse):
    cell, params, xs, state = _problem()
    lengths = jnp.array([T, 2, 0], jnp.int32)
    xs_tm = jnp.moveaxis(xs, 1, 0)
    req = backends.request(cell, params, xs_tm, state, time_major=True, lengths=lengths, reverse=reverse)
    xs_run = rx.reverse_sequences(xs_tm, lengths) if reverse else xs_tm
    final, ys, states = cudnn.run(cell, params, xs_run, state, lengths, None, req, _reference_lstm)
    ys = rx.reverse_sequences(ys, lengths) if reverse else ys
    assert states is None
    want_final, want = rx.scan(cell, params, xs, state, lengths=lengths, reverse=reverse, backend="sequential")
    chex.assert_trees_all_close((final, jnp.moveaxis(ys, 0, 1)), (want_final, want), **TOL)


def test_off_a_gpu_it_reports_itself_unavailable_and_refuses_by_name():
    """On a GPU (``python -m benchmarks.gpu_check``) the same call is available and ``auto`` runs it instead."""
    cell, params, xs, _ = _problem()
    reasons = backends.available(cell, params, xs)
    assert cudnn.CUDNN_LSTM.forward_mode is False
    if jax.default_backend() == "gpu":
        assert reasons["cudnn_lstm"] is None and backends.which(cell, params, xs) == "cudnn_lstm"
        return
    assert "runs on GPU only" in reasons["cudnn_lstm"] and repr(jax.default_backend()) in reasons["cudnn_lstm"]
    with pytest.raises(ValueError, match=r"backend 'cudnn_lstm' cannot run this call: .*GPU only"):
        rx.scan(cell, params, xs, backend="cudnn_lstm")


def test_what_it_refuses_beyond_the_platform():
    cell, params, xs, state = _problem()

    def gpu(**options):
        return backends.request(cell, params, xs, state, **options)._replace(platform="gpu")

    assert cudnn.CUDNN_LSTM.supports(gpu()) is None
    assert "return_states" in cudnn.CUDNN_LSTM.supports(gpu(return_states=True))
    assert "float32 only" in cudnn.CUDNN_LSTM.supports(gpu()._replace(dtypes=("bfloat16",)))
    peephole = rx.lstm(H, peephole=True)
    req = backends.request(peephole, peephole.init(jax.random.key(0), I), xs, state)._replace(platform="gpu")
    assert "plain LSTM" in cudnn.CUDNN_LSTM.supports(req)
    # auto on a GPU: cuDNN first, the XLA loop where cuDNN cannot serve the call.
    assert backends.select(gpu()).name == "cudnn_lstm"
    assert backends.select(gpu(return_states=True)).name == "xla_lstm"
    np.testing.assert_equal(backends.select(gpu(lengths=jnp.ones((B,), jnp.int32))).name, "cudnn_lstm")
