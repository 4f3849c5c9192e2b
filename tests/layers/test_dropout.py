"""`layers.Dropout`: Keras's dropout on TensorFlow, unchanged; on JAX a mask drawn by XLA's bit
generator that is a Bernoulli(1 - rate) mask as Keras's is (kept share, scaling, noise shape),
follows the seed, changes every call, and advances in the state a jitted step carries."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfx_transformer.layers import Dropout


def test_on_tensorflow_it_is_keras_dropout():
    inputs = np.random.default_rng(0).normal(size=(8, 16, 32)).astype("float32")
    ours = Dropout(0.3, seed=5)(inputs, training=True)
    theirs = keras.layers.Dropout(0.3, seed=5)(inputs, training=True)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_array_equal(np.asarray(Dropout(0.3)(inputs, training=False)), inputs)


def test_config_round_trip():
    layer = Dropout(0.25, noise_shape=(None, 1, 4), seed=3, name="d")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is Dropout
    assert again.get_config() == layer.get_config()


JAX_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras, jax
    from keras import ops
    assert keras.backend.backend() == "jax"
    from tfx_transformer.layers import Dropout
    from tfx_transformer.layers.dropout import bit_generator_dropout, mask_algorithm

    x = np.ones((200, 500), "float32")
    layer = Dropout(0.3, seed=7)
    first = np.asarray(layer(x, training=True))
    second = np.asarray(layer(x, training=True))
    kept = first != 0
    assert abs(kept.mean() - 0.7) < 0.01, kept.mean()  # 100,000 draws: 4.5 standard errors
    np.testing.assert_allclose(first[kept], 1 / 0.7, rtol=1e-6)
    assert (kept != (second != 0)).mean() > 0.3  # a new mask each call (0.42 expected)
    # The seed decides the masks: another layer with the same seed draws the same ones.
    np.testing.assert_array_equal(np.asarray(Dropout(0.3, seed=7)(x, training=True)), first)
    # Not Keras's threefry mask for the same seed: this path draws it.
    theirs = np.asarray(keras.layers.Dropout(0.3, seed=7)(x, training=True))
    assert ((theirs != 0) != kept).mean() > 0.3
    # Masks of one draw per noise-shape position, broadcast like Keras's.
    cube = np.ones((4, 6, 50), "float32")
    shared = np.asarray(Dropout(0.5, noise_shape=(None, 1, 50), seed=1)(cube, training=True))
    assert (shared == shared[:, :1, :]).all() and 0 < (shared != 0).mean() < 1
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    # The other platforms' algorithm (XLA's default) draws a Bernoulli mask too, another one.
    assert mask_algorithm() == jax.lax.RandomAlgorithm.RNG_THREE_FRY  # this is a CPU
    default = np.asarray(bit_generator_dropout(
        x, 0.3, np.array([3, 4], "uint32"), algorithm=jax.lax.RandomAlgorithm.RNG_DEFAULT))
    assert abs((default != 0).mean() - 0.7) < 0.01, (default != 0).mean()
    np.testing.assert_allclose(default[default != 0], 1 / 0.7, rtol=1e-6)
    same_seed = np.asarray(bit_generator_dropout(x, 0.3, np.array([3, 4], "uint32")))
    assert ((same_seed != 0) != (default != 0)).mean() > 0.3
    # Rates near the ends keep their share (the threshold is a 16-bit number).
    for rate in (0.001, 0.95):
        share = (np.asarray(bit_generator_dropout(x, rate, np.array([5, 6], "uint32"))) != 0).mean()
        assert abs(share - (1 - rate)) < 4.5 * np.sqrt(rate * (1 - rate) / x.size), (rate, share)
    # Inside a jitted stateless call the seed is state: it advances, and the mask with it.
    model = keras.Sequential([keras.Input((500,)), Dropout(0.5, seed=2)])
    step = jax.jit(lambda nt, x: model.stateless_call([], nt, x, training=True))
    state = [v.value for v in model.non_trainable_variables]
    out1, state = step(state, x)
    out2, state = step(state, x)
    assert ((np.asarray(out1) != 0) != (np.asarray(out2) != 0)).mean() > 0.3
    # Gradients pass through the kept positions, scaled.
    grad = jax.grad(lambda v: ops.sum(Dropout(0.4, seed=3)(v, training=True)))(x)
    np.testing.assert_allclose(np.unique(np.asarray(grad)), [0.0, 1 / 0.6], rtol=1e-6)
    print("ok")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_on_jax_the_bit_generator_draws_a_bernoulli_mask_that_follows_the_seed():
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
