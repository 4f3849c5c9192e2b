import math

import numpy as np
import pytest
from keras import ops

from tests.layer_testing import run_layer_test
from tfx_transformer.layers import (
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
    TokenEmbedding,
    sinusoidal_encoding,
)


def test_sinusoidal_values_follow_the_paper_formula():
    length, depth = 50, 16
    x = np.zeros((2, length, depth), "float32")
    _, encoding = run_layer_test(SinusoidalPositionEncoding, {}, (x,), expect_weights=False)
    for pos in (0, 1, 7, 49):
        for i in range(depth // 2):
            angle = pos / 10000 ** (2 * i / depth)
            assert encoding[1, pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-5)
            assert encoding[1, pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_start_index_continues_the_sequence():
    full = ops.convert_to_numpy(sinusoidal_encoding(10, 8))
    layer = SinusoidalPositionEncoding()
    part = ops.convert_to_numpy(layer(np.zeros((1, 3, 8), "float32"), start_index=4))
    np.testing.assert_allclose(part[0], full[4:7], atol=1e-6)


def test_learned_positions_slice_their_table():
    layer, output = run_layer_test(
        LearnedPositionEmbedding, {"max_length": 12}, (np.zeros((2, 5, 4), "float32"),)
    )
    table = np.asarray(layer.position_embeddings)
    np.testing.assert_array_equal(output[0], table[:5])
    shifted = ops.convert_to_numpy(layer(np.zeros((1, 2, 4), "float32"), start_index=7))
    np.testing.assert_array_equal(shifted[0], table[7:9])


def test_learned_positions_refuse_positions_beyond_max_length():
    layer = LearnedPositionEmbedding(4)
    with pytest.raises(ValueError, match="max_length=4"):
        layer(np.zeros((1, 5, 2), "float32"))


def test_token_embedding_is_scaled_by_sqrt_d_model_and_reusable_as_output():
    ids = np.array([[1, 2, 0]])
    layer, output = run_layer_test(TokenEmbedding, {"vocab_size": 10, "d_model": 16}, (ids,))
    table = np.asarray(layer.embeddings)
    np.testing.assert_allclose(output[0], table[[1, 2, 0]] * 4.0, rtol=1e-6)
    hidden = np.ones((1, 1, 16), "float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.attend(hidden))[0, 0], table.sum(axis=1), rtol=1e-5
    )
