import numpy as np

from tests.layer_testing import run_layer_test
from tfx_transformer.layers import PositionwiseFeedForward


def test_feed_forward_is_linear_relu_linear_per_position(rng):
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    layer, output = run_layer_test(PositionwiseFeedForward, {"d_ff": 32}, (x,))
    w1, b1, w2, b2 = [np.asarray(w) for w in layer.weights]
    expected = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    # Position-wise: each position's output depends on that position alone.
    alone = np.asarray(layer(x[:, 1:2]))
    np.testing.assert_allclose(alone[:, 0], output[:, 1], rtol=1e-6, atol=1e-6)
