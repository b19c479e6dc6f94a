"""``stacked`` and ``bidirectional`` against chained runs of the NumPy reference (``reference.run``).

The references are built by hand from per-layer runs: outputs fed to the next layer, residual sums,
the backward direction run over each sequence's valid part reversed, and the merge in NumPy.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax as rx
from reference import CASES, random_inputs, run, to_numpy

B, T, I, H = 3, 6, 2, 4
TOL = dict(atol=3e-5, rtol=3e-5)
LENGTHS = np.array([T, 3, 0])


def _identity_layer() -> rx.Layer:
    """A layer that returns its inputs, to observe what a stack feeds from one layer to the next."""
    return rx.Layer(
        init=lambda key, input_size: (),
        initial_state=lambda params, batch_shape: (),
        apply=lambda params, xs, state=None, *, lengths=None, key=None, time_major=False: ((), xs),
        name="identity",
    )


def _randomize(params, seed):
    """Every leaf of a (nested) params tree redrawn ``~ N(0, 0.5^2)``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(0.5 * rng.normal(size=p.shape), p.dtype), params)


def _ref(name, params, xs, lengths=None, reverse=False):
    """The reference run of cell ``name`` from a zero state: ``(final, ys)``."""
    xs = np.asarray(xs, np.float64)
    cell = CASES[name].make(H)
    state = to_numpy(cell.initial_state(params, xs.shape[:-2]))
    final, ys, _ = run(CASES[name].step, to_numpy(params), xs, state, lengths=lengths, reverse=reverse)
    return final, ys


def _layer_params(layer, seed=0, input_size=I):
    return _randomize(layer.init(jax.random.key(seed), input_size), seed)


XS = random_inputs((B, T, I), 1)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_stacked_equals_chained_layers(lengths):
    names = ["lstm_proj", "gru", "mgu"]
    layer = rx.stacked([CASES[n].make(H) for n in names])
    params = _layer_params(layer)
    finals, ys = layer.apply(params, XS, lengths=lengths)
    want_ys = XS
    for k, (name, p) in enumerate(zip(names, params)):
        want_final, want_ys = _ref(name, p, want_ys, lengths)
        chex.assert_trees_all_close(tuple(finals[k]), want_final, **TOL)
    chex.assert_trees_all_close(ys, want_ys, **TOL)


def test_stacked_residual_adds_inputs_from_the_second_layer_on():
    names = ["gru", "lstm", "elman"]
    layer = rx.stacked([CASES[n].make(H) for n in names], residual=True)
    params = _layer_params(layer)
    _, ys = layer.apply(params, XS, lengths=LENGTHS)
    _, want = _ref(names[0], params[0], XS, LENGTHS)  # I != H: no residual on the first layer
    for name, p in zip(names[1:], params[1:]):
        want = _ref(name, p, want, LENGTHS)[1] + want
    chex.assert_trees_all_close(ys, want, **TOL)
    np.testing.assert_array_equal(ys[2], 0.0)  # an empty sequence stays zero through the residual sums


def test_stacked_passes_state_and_streams_in_chunks():
    layer = rx.stacked([rx.lstm(H), rx.gru(H, reset_after=False)])
    params = _layer_params(layer)
    state = _randomize(layer.initial_state(params, (B,)), 5)
    final, ys = layer.apply(params, XS, state)
    s, outs = state, []
    for a, b in itertools.pairwise([0, 2, 3, T]):
        s, out = layer.apply(params, XS[:, a:b], s)
        outs.append(out)
    chex.assert_trees_all_close(s, final, **TOL)
    chex.assert_trees_all_close(jnp.concatenate(outs, axis=1), ys, **TOL)
    # The given state is used: from zeros the result differs.
    assert not np.allclose(layer.apply(params, XS)[1], ys, atol=1e-3)


def test_dropout_is_identity_without_a_key_and_scaled_bernoulli_with_one():
    rate, cell = 0.3, rx.elman(8)
    layer = rx.stacked([cell, _identity_layer()], dropout=rate)
    params = _layer_params(layer)
    xs = random_inputs((4, T, I), 2)
    _, before = rx.scan(cell, params[0], xs)
    chex.assert_trees_all_equal(layer.apply(params, xs)[1], before)  # no key: evaluation mode
    _, dropped = jax.jit(layer.apply)(params, xs, key=jax.random.key(3))
    zero = np.asarray(dropped) == 0.0
    n = zero.size
    assert abs(zero.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)  # ~rate of the activations dropped
    # The kept ones are scaled by 1 / (1 - rate), once: the last layer's outputs are never dropped.
    np.testing.assert_allclose(np.asarray(dropped)[~zero], np.asarray(before)[~zero] / (1 - rate), rtol=1e-5)
    # A key decides the mask: the same key repeats it, another key changes it.
    chex.assert_trees_all_equal(layer.apply(params, xs, key=jax.random.key(3))[1], dropped)
    assert not np.array_equal(layer.apply(params, xs, key=jax.random.key(4))[1] == 0.0, zero)


def test_dropout_never_after_the_last_layer():
    cell = rx.gru(H)
    layer = rx.stacked([cell], dropout=0.5)
    params = _layer_params(layer)
    (final,), ys = layer.apply(params, XS, key=jax.random.key(0))
    chex.assert_trees_all_close((final, ys), rx.scan(cell, params[0], XS))
    # Between layers it changes what the next layer sees.
    two = rx.stacked([cell, cell], dropout=0.5)
    params = _layer_params(two)
    assert not np.allclose(two.apply(params, XS, key=jax.random.key(0))[1], two.apply(params, XS)[1])


MERGES = {
    "concat": lambda f, b: np.concatenate([f, b], -1),
    "sum": np.add,
    "mul": np.multiply,
    "ave": lambda f, b: (f + b) / 2,
}


@pytest.mark.parametrize("merge", [*MERGES, "callable"])
def test_bidirectional_equals_forward_plus_reversed_run(merge):
    custom = lambda f, b: f - 2.0 * b  # noqa: E731
    layer = rx.bidirectional(rx.lstm(H), rx.gru(H), merge=custom if merge == "callable" else merge)
    params = _layer_params(layer)
    final, ys = layer.apply(params, XS, lengths=LENGTHS)
    assert isinstance(final, rx.BidirectionalState)
    final_f, ys_f = _ref("lstm", params["forward"], XS, LENGTHS)
    final_b, ys_b = _ref("gru", params["backward"], XS, LENGTHS, reverse=True)
    chex.assert_trees_all_close(tuple(final.forward), final_f, **TOL)
    chex.assert_trees_all_close(tuple(final.backward), final_b, **TOL)
    chex.assert_trees_all_close(ys, (MERGES.get(merge) or custom)(ys_f, ys_b), **TOL)
    assert rx.output_size(layer, params, I) == (2 * H if merge == "concat" else H)


def test_bidirectional_backward_flips_each_valid_part_by_hand():
    cell = rx.mgu(H)
    layer = rx.bidirectional(cell, cell, merge=lambda f, b: b)
    params = _layer_params(layer)
    _, ys = layer.apply(params, XS, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        flipped = np.asarray(XS[b, :n])[::-1]
        _, alone = rx.scan(cell, params["backward"], flipped)
        chex.assert_trees_all_close(ys[b, :n], np.asarray(alone)[::-1], **TOL)
        np.testing.assert_array_equal(ys[b, n:], 0.0)


def test_stacked_of_bidirectional_with_lengths():
    layer = rx.stacked([rx.bidirectional(rx.lstm(H), rx.lstm(H)), rx.bidirectional(rx.gru(H), rx.elman(H))])
    params = _layer_params(layer)
    _, ys = layer.apply(params, XS, lengths=LENGTHS)
    want = XS
    for (fwd, bwd), p in zip([("lstm", "lstm"), ("gru", "elman")], params):
        want_f = _ref(fwd, p["forward"], want, LENGTHS)[1]
        want = np.concatenate([want_f, _ref(bwd, p["backward"], want, LENGTHS, reverse=True)[1]], -1)
    chex.assert_trees_all_close(ys, want, **TOL)
    assert rx.output_size(layer, params, I) == 2 * H


def test_layers_time_major_and_as_layer():
    cell = rx.lstm(H, proj_size=3)
    params = _layer_params(cell)
    chex.assert_trees_all_close(
        rx.as_layer(cell).apply(params, XS, lengths=LENGTHS), rx.scan(cell, params, XS, lengths=LENGTHS)
    )
    assert rx.output_size(cell, params, I) == 3
    layer = rx.stacked([rx.bidirectional(cell, cell, merge="sum"), rx.gru(H)])
    params = _layer_params(layer)
    final, ys = layer.apply(params, XS, lengths=LENGTHS)
    final_tm, ys_tm = layer.apply(params, jnp.moveaxis(XS, 1, 0), lengths=LENGTHS, time_major=True)
    chex.assert_trees_all_close((final_tm, jnp.moveaxis(ys_tm, 0, 1)), (final, ys), **TOL)


def test_bidirectional_without_merge_returns_the_pair_concat_would_join():
    """merge=None (Keras's merge_mode=None): the two directions apart, in input order, with lengths too."""
    bi = rx.bidirectional(rx.lstm(4), rx.gru(3), merge=None)
    joined = rx.bidirectional(rx.lstm(4), rx.gru(3))
    params = bi.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 2))
    lengths = jnp.array([6, 2, 0])
    final, (ys_f, ys_b) = jax.jit(lambda p, x: bi.apply(p, x, lengths=lengths))(params, xs)
    want_final, want = joined.apply(params, xs, lengths=lengths)
    np.testing.assert_array_equal(jnp.concatenate([ys_f, ys_b], axis=-1), want)
    chex.assert_trees_all_equal(final, want_final)
    # Last in a stack it still returns the pair; anywhere else (or with a residual) it is refused at construction.
    top = rx.stacked([rx.bidirectional(rx.lstm(4), rx.lstm(4)), bi])
    _, (top_f, top_b) = top.apply(top.init(jax.random.key(2), 2), xs, time_major=True)
    assert top_f.shape == (3, 6, 4) and top_b.shape == (3, 6, 3)
    with pytest.raises(ValueError, match=r"layer 0 is bidirectional\(merge=None\).*the next layer needs one array"):
        rx.stacked([bi, rx.lstm(3)])
    with pytest.raises(ValueError, match=r"layer 1 is bidirectional\(merge=None\).*a residual connection"):
        rx.stacked([rx.lstm(7), bi], residual=True)
    with pytest.raises(TypeError, match="`merge` must be a string, a function or None, got 3"):
        rx.bidirectional(rx.lstm(4), rx.lstm(4), merge=3)
