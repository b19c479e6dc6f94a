"""Thin Flax adapters: a recurrax cell or layer as a Flax module.

* :mod:`recurrax.flax.linen` -- ``RNN``, a ``flax.linen.Module``;
* :mod:`recurrax.flax.nnx` -- ``RNN``, a ``flax.nnx.Module``.

Both hold the params ``cell.init`` creates and run the same driver (:func:`recurrax.scan`, or a
layer's ``apply``); no recurrence is written here. Import the submodule you use (nothing is
imported eagerly, so ``import recurrax.flax`` does not pull in both Flax APIs)::

    from recurrax.flax.linen import RNN
"""
