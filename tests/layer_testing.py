"""One helper that gives every layer the same checks: config round trip, weights, mixed precision."""

import keras
import numpy as np


def call_layer(layer, args, kwargs):
    return keras.ops.convert_to_numpy(_first(layer(*args, **kwargs)))


def _first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def run_layer_test(layer_class, init_kwargs, args, call_kwargs=None, expect_weights=True):
    """Checks that `layer_class(**init_kwargs)` called on `args`:

    - survives get_config -> from_config with an identical config, and the rebuilt layer with the
      original weights gives identical outputs;
    - has trainable weights when `expect_weights` (and gradients reach all of them);
    - under `mixed_bfloat16` keeps float32 variables, computes in bfloat16 and stays finite.
    Returns the layer and its float32 output.
    """
    call_kwargs = call_kwargs or {}
    layer = layer_class(**init_kwargs)
    output = call_layer(layer, args, call_kwargs)
    assert np.all(np.isfinite(output))

    config = layer.get_config()
    clone = layer_class.from_config(config)
    assert clone.get_config() == config
    call_layer(clone, args, call_kwargs)  # builds the clone
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(call_layer(clone, args, call_kwargs), output)

    assert bool(layer.trainable_weights) == expect_weights
    if expect_weights:
        _check_gradients_reach_every_weight(layer, args, call_kwargs)

    mixed = layer_class(**init_kwargs, dtype="mixed_bfloat16")
    mixed_output = _first(mixed(*args, **call_kwargs))
    assert all(v.dtype == "float32" for v in mixed.weights)
    assert keras.backend.standardize_dtype(mixed_output.dtype) in ("bfloat16", "float32")
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(mixed_output, "float32"))))
    return layer, output


def _check_gradients_reach_every_weight(layer, args, call_kwargs):
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tf.cast(_first(layer(*args, **call_kwargs)), tf.float32)))
    grads = tape.gradient(loss, layer.trainable_weights)
    missing = [w.path for w, g in zip(layer.trainable_weights, grads) if g is None]
    assert not missing, f"no gradient reaches {missing}"
