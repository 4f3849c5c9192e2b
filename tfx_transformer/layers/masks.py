"""Boolean attention masks, built once at the top of a model and consumed by its blocks.

One convention everywhere: a mask is boolean and True means "may attend". Attention masks have
the shape [B, T, S] (query length T, key length S) or anything that broadcasts to it, such as
[B, 1, S] for padding and [1, T, S] for causality. Token id 0 is padding.
"""

import keras
import ml_dtypes
import numpy as np
from keras import ops

from tfx_transformer.tokens import PAD_ID


def padding_mask(token_ids, pad_id=PAD_ID):
    """[B, S] ids -> [B, S] bool, True on real tokens."""
    return ops.not_equal(token_ids, pad_id)


def key_padding_mask(token_ids, pad_id=PAD_ID):
    """[B, S] ids -> [B, 1, S] bool: every query may attend to every real key."""
    return ops.expand_dims(padding_mask(token_ids, pad_id), axis=1)


def causal_mask(query_length, key_length=None, query_offset=0):
    """[1, T, S] bool, True where key position <= query position.

    `query_offset` is the absolute position of the first query, so that a decoder that already
    holds `query_offset` cached positions can mask its next queries against the full cache.
    """
    key_length = query_length if key_length is None else key_length
    query_positions = ops.arange(query_length) + query_offset  # (T,)
    key_positions = ops.arange(key_length)  # (S,)
    mask = ops.greater_equal(
        ops.expand_dims(query_positions, 1), ops.expand_dims(key_positions, 0)
    )  # (T, S)
    return ops.expand_dims(mask, 0)  # (1, T, S)


def combine_masks(*masks):
    """Logical AND of broadcastable boolean masks; None entries are ignored."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    combined = ops.cast(present[0], "bool")
    for mask in present[1:]:
        combined = ops.logical_and(combined, ops.cast(mask, "bool"))
    return combined


def decoder_self_attention_mask(target_ids, pad_id=PAD_ID):
    """[B, T] ids -> [B, T, T] bool: causal and no attention to padded keys."""
    length = ops.shape(target_ids)[1]
    return combine_masks(causal_mask(length), key_padding_mask(target_ids, pad_id))


def masked_fill_value(dtype):
    """The most negative finite value of `dtype` (not -1e9, which overflows in float16)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "bfloat16":
        return float(ml_dtypes.finfo(ml_dtypes.bfloat16).min)
    return float(np.finfo(dtype).min)
