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


# Packed rows ----------------------------------------------------------------------------------
# A packed row holds several examples one after another; its segment ids number them 1, 2, ...
# along the row, 0 on the padding after the last. A token attends only to tokens of its own
# example, and positions count from 0 at each example's first token.


def same_segment_mask(query_segments, key_segments):
    """[B, T] and [B, S] segment ids -> [B, T, S] bool: True where query and key belong to the
    same example. Padding queries (segment 0) may attend every key: their outputs are never
    used, and a query with no key at all would need a special case in every attention."""
    queries = ops.expand_dims(query_segments, 2)  # (B, T, 1)
    keys = ops.expand_dims(key_segments, 1)  # (B, 1, S)
    return ops.logical_or(ops.equal(queries, keys), ops.equal(queries, 0))


def packed_causal_mask(segments):
    """[B, T] segment ids -> [B, T, T] bool: causal within each example."""
    length = ops.shape(segments)[1]
    return combine_masks(causal_mask(length), same_segment_mask(segments, segments))


def segment_positions(segments):
    """[B, T] segment ids -> [B, T] int32: each token's position within its example (0 on
    padding, so that a learned table of max_length rows serves the packed width too)."""
    earlier_same = ops.cast(packed_causal_mask(segments), "int32")  # includes the token itself
    real = ops.cast(ops.not_equal(segments, 0), "int32")
    return (ops.sum(earlier_same, axis=-1) - 1) * real
