"""Helpers for decoding caches: preallocated key/value buffers written one position at a time,
so that decode loops keep static shapes (they trace once and run inside a SavedModel).

A cache is one (keys, values) pair per block, each [B, h, L, d_head], L the longest decode.
"""

import keras
from keras import ops


def empty_key_value_cache(num_blocks, batch_size, num_heads, max_length, head_size, dtype):
    """One (keys, values) pair of zeros [B, h, L, d_head] per block, filled while decoding."""
    shape = (batch_size, num_heads, max_length, head_size)
    return tuple((ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype)) for _ in range(num_blocks))


def empty_block_caches(count, block_kwargs, batch_size, max_length, dtype):
    """`empty_key_value_cache` for `count` attention layers of blocks built with `block_kwargs`."""
    heads = block_kwargs["num_heads"]
    return empty_key_value_cache(
        count, batch_size, heads, max_length, block_kwargs["d_model"] // heads, dtype
    )


def write_positions(buffer, update, index, axis):
    """buffer with `update` written at positions index.. of `axis` (a dynamic index).

    TensorFlow's `slice_update` lowers to XlaDynamicUpdateSlice, which a SavedModel served by
    TF Serving may not have a kernel for; a single position is written with a mask there
    instead, using only core ops. Other backends keep the in-place update.
    """
    if keras.backend.backend() == "tensorflow" and update.shape[axis] == 1:
        length = ops.shape(buffer)[axis]
        shape = [1] * len(buffer.shape)
        shape[axis] = length
        at_index = ops.reshape(ops.equal(ops.arange(length), index), shape)
        return ops.where(at_index, update, buffer)
    start = [0] * len(buffer.shape)
    start[axis] = index
    return ops.slice_update(buffer, start, update)
