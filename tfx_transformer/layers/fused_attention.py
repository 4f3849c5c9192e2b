"""Fused scaled dot-product attention on JAX, with right padding given to cuDNN as lengths.

cuDNN's fused kernel takes a boolean mask only as an additive bias of [B, 1, T, S] that it reads
for every head, forwards and backwards, and it computes every key block even where a row has no
real key left. When a mask is plain right padding (each row's real keys first), or that and
causality, cuDNN can take each row's number of keys instead (`key_value_seq_lengths`, with
`is_causal`): no bias at all, and key blocks past a row's length skipped.

Whether a mask has that form depends on the data (a left-padded batch does not), so the step
checks it on the device and runs either the lengths or the mask form (`lax.cond`: both are
compiled, one runs); both compute the same attention. Where cuDNN does not take the operands
(no GPU, float32, a head size it refuses) the attention runs as `keras.ops.dot_product_attention`
with the mask, as before; where JAX refuses the lengths form as it traces (an older cuDNN, say),
the mask form runs and the refusal is logged once.
"""

import logging

from keras import ops

_refusals_logged = set()


def fused_attention(queries, keys, values, mask, scale, lengths_implementation=None):
    """Attention of queries [B, T, h, d] over keys and values [B, S, h, d] -> [B, T, h, d].

    `mask`: bool broadcastable to [B, T, S] (True = may attend) or None.
    `lengths_implementation`: the kernel that runs the lengths form, "cudnn" (see
    `cudnn_implementation`) or "xla" (the same computation anywhere: the tests run it on a CPU);
    None runs the mask form only.
    """
    structure = None
    if mask is not None and lengths_implementation is not None:
        structure = padding_structure(mask, queries.shape[1], keys.shape[1])
    if structure is None:
        return masked_attention(queries, keys, values, mask, scale)
    import jax

    lengths, causal, holds = structure
    lengths = ops.broadcast_to(lengths, (ops.shape(queries)[0],))

    def with_lengths(queries, keys, values, lengths):
        return jax.nn.dot_product_attention(
            queries, keys, values, scale=scale, is_causal=causal,
            key_value_seq_lengths=lengths, implementation=lengths_implementation,
        )

    def with_mask(queries, keys, values, lengths):
        return masked_attention(queries, keys, values, mask, scale)

    try:
        return jax.lax.cond(holds, with_lengths, with_mask, queries, keys, values, lengths)
    except (NotImplementedError, RuntimeError, ValueError) as error:
        # JAX checks cuDNN's version and the operands as it traces: where the lengths form is
        # refused, the mask form still runs (the step is not lost to a faster kernel's absence).
        _log_refusal(error)
        return masked_attention(queries, keys, values, mask, scale)


def masked_attention(queries, keys, values, mask, scale):
    """`keras.ops.dot_product_attention` with the mask broadcast to [B, 1, T, S]: cuDNN's kernel
    refuses a mask (it becomes a bias) whose query axis is 1."""
    if mask is not None:
        batch, length = ops.shape(queries)[0], ops.shape(queries)[1]
        mask = ops.broadcast_to(
            ops.expand_dims(ops.cast(mask, "bool"), axis=1),
            (batch, 1, length, ops.shape(keys)[1]),
        )
    return ops.dot_product_attention(queries, keys, values, mask=mask, scale=scale)


def padding_structure(mask, query_length, key_length):
    """What right padding would make of `mask` (bool, broadcastable to [B, T, S]):
    (lengths [B'] int32, causal, holds), B' being the mask's batch size (1 or B).

    A mask with one query row ([B, 1, S]: padding) is compared with "the first lengths[b] keys";
    a full square one ([B, T, T]: a decoder's) with that and "no key after the query". `holds`
    (a scalar bool, computed on the device) is whether the mask is exactly that for every row,
    each row keeping at least one key (cuDNN's result for a row of none is not the mask form's).
    None where the mask's static shape rules both forms out.
    """
    if len(mask.shape) != 3 or mask.shape[-1] != key_length:
        return None
    mask = ops.cast(mask, "bool")
    if mask.shape[1] == 1:
        causal = False
    elif mask.shape[1] == query_length == key_length and query_length is not None:
        causal = True
    else:
        return None
    last_row = mask[:, -1, :]  # (B', S): with causality too, the last query sees every real key
    lengths = ops.sum(ops.cast(last_row, "int32"), axis=-1)  # (B',)
    positions = ops.arange(key_length, dtype="int32")
    expected = ops.expand_dims(
        ops.less(ops.expand_dims(positions, 0), ops.expand_dims(lengths, 1)), 1
    )  # (B', 1, S)
    if causal:
        expected = ops.logical_and(
            expected, ops.expand_dims(ops.less_equal(positions[None, :], positions[:, None]), 0)
        )  # (B', T, T)
    holds = ops.logical_and(
        ops.all(ops.equal(mask, expected)), ops.all(ops.greater(lengths, 0))
    )
    return lengths, causal, holds


def cudnn_implementation(queries, keys, values):
    """"cudnn" where cuDNN's fused attention takes these operands (a GPU of compute capability
    8.0 or newer, 16-bit floats, head sizes it supports), else None."""
    try:
        from keras.src.backend.jax.nn import _can_use_flash_attention
    except ImportError:  # a Keras without the check: leave the choice to keras.ops
        return None
    import jax

    if jax.devices()[0].platform != "gpu":
        return None
    return "cudnn" if _can_use_flash_attention(queries, keys, values, None) else None


def _log_refusal(error):
    message = f"{type(error).__name__}: {error}"
    if message not in _refusals_logged:
        _refusals_logged.add(message)
        logging.getLogger(__name__).warning(
            "cuDNN refused padding as key lengths (%s); attention takes the mask instead", message
        )
