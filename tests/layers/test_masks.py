import numpy as np
from keras import ops

from tfx_transformer.layers import (
    causal_mask,
    combine_masks,
    decoder_self_attention_mask,
    key_padding_mask,
    masked_fill_value,
    padding_mask,
)


def test_padding_mask_marks_real_tokens():
    ids = np.array([[5, 7, 0, 0], [1, 0, 3, 0]])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(padding_mask(ids)), [[1, 1, 0, 0], [1, 0, 1, 0]]
    )
    assert ops.convert_to_numpy(key_padding_mask(ids)).shape == (2, 1, 4)


def test_causal_mask_is_lower_triangular():
    np.testing.assert_array_equal(
        ops.convert_to_numpy(causal_mask(4))[0], np.tril(np.ones((4, 4), bool))
    )


def test_causal_mask_with_offset_masks_future_cache_positions():
    # A query at absolute position 2 against a cache of 5 positions sees 0, 1, 2.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(causal_mask(1, 5, query_offset=2)), [[[1, 1, 1, 0, 0]]]
    )


def test_decoder_mask_combines_causal_and_padding():
    ids = np.array([[4, 5, 6, 0]])
    expected = np.tril(np.ones((4, 4), bool)) & np.array([1, 1, 1, 0], bool)[None, :]
    np.testing.assert_array_equal(ops.convert_to_numpy(decoder_self_attention_mask(ids))[0], expected)


def test_combine_masks_ignores_none_and_broadcasts():
    a = np.array([[[True, False, True]]])  # (1, 1, 3)
    b = np.array([[[True], [False]]])  # (1, 2, 1)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(combine_masks(a, None, b)), [[[1, 0, 1], [0, 0, 0]]]
    )
    assert combine_masks(None, None) is None


def test_fill_value_is_the_dtype_minimum_not_minus_1e9():
    assert masked_fill_value("float16") == -65504.0
    assert masked_fill_value("float32") == float(np.finfo(np.float32).min)
    assert masked_fill_value("bfloat16") < -3e38
