"""Linformer self-attention (Wang et al. 2020, arXiv 2006.04768): linear in the sequence length.

Keys and values [B, h, n, d_head] are projected along the sequence axis to k rows by learned
E, F [max_length, k] (the first n rows of them for a sequence of n): the weights are
[B, h, n, k] instead of [B, h, n, n]. Non-causal only (a projection over the sequence mixes the
future into every row), so it serves encoder self-attention.

Padding is masked before the projection: padded keys and values are zeroed, so they add nothing
to the k projected rows however many there are, and the k rows need no mask.
"""

import keras
from keras import ops

from tfx_transformer.layers.attention import MultiHeadAttention, masked_softmax
from tfx_transformer.layers.validation import check_positive_int


@keras.saving.register_keras_serializable(package="tfx_transformer")
class LinformerAttention(MultiHeadAttention):
    """Multi-head self-attention over keys and values projected to `projected_length` rows.

    Args:
      num_heads, d_model, score, dropout, ...: as `MultiHeadAttention` (score: scaled_dot or dot).
      max_length: the longest sequence (rows of E and F).
      projected_length: k, the rows keys and values are projected to.
      share_projection: one matrix for keys and values (E = F, the paper's "key-value sharing").

    The attention mask must be a key padding mask [B, 1, S] (True = real key): a mask that
    differs per query (causal) cannot be honoured after the projection, and is refused.
    Returns the output and, with `return_attention_scores`, the weights [B, h, T, k].
    """

    def __init__(
        self, num_heads, max_length, projected_length=256, share_projection=False, **kwargs
    ):
        if kwargs.get("score", "scaled_dot") not in ("scaled_dot", "dot"):
            raise ValueError(
                f"Linformer attention takes the scaled_dot or dot score. Received: {kwargs['score']!r}"
            )
        super().__init__(num_heads, **kwargs)
        check_positive_int("max_length", max_length)
        check_positive_int("projected_length", projected_length)
        self.max_length = max_length
        self.projected_length = projected_length
        self.share_projection = share_projection

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        shape = (self.max_length, self.projected_length)
        self.key_projection = self.add_weight(
            name="key_projection", shape=shape, initializer="glorot_normal"
        )  # E
        self.value_projection = self.key_projection
        if not self.share_projection:
            self.value_projection = self.add_weight(
                name="value_projection", shape=shape, initializer="glorot_normal"
            )  # F

    def call(self, query, value=None, key=None, attention_mask=None, cache=None, **kwargs):
        if cache is not None:
            raise ValueError("Linformer attention is non-causal: it has no incremental decoding cache.")
        if value is not None and value is not query:
            raise ValueError("Linformer attention is self-attention: pass only the query.")
        if attention_mask is not None and (
            len(attention_mask.shape) != 3 or attention_mask.shape[1] != 1
        ):
            raise ValueError(
                "Linformer attention takes a key padding mask [B, 1, S]; a mask per query (such "
                f"as a causal one) cannot apply after the projection. Received: {attention_mask.shape}"
            )
        length = query.shape[1]
        if isinstance(length, int) and length > self.max_length:
            raise ValueError(
                f"A sequence of {length} was given to Linformer attention with max_length="
                f"{self.max_length}; truncate the input or build it with a larger max_length."
            )
        return super().call(query, attention_mask=attention_mask, **kwargs)

    def _attend(self, queries, keys, values, attention_mask, query_offset, training):
        length = ops.shape(keys)[2]
        if attention_mask is not None:
            # (B, 1, 1, S) -> (B, 1, S, 1): zero the padded keys and values.
            real = ops.cast(ops.swapaxes(attention_mask, -1, -2), keys.dtype)
            keys, values = keys * real, values * real
        key_projection = ops.cast(self.key_projection[:length], keys.dtype)  # (n, k)
        value_projection = ops.cast(self.value_projection[:length], values.dtype)
        projected_keys = ops.einsum("bhnd,nk->bhkd", keys, key_projection)
        projected_values = ops.einsum("bhnd,nk->bhkd", values, value_projection)
        scores = self.attention.compute_scores(queries, projected_keys)  # (B, h, T, k)
        weights = masked_softmax(scores)
        dropped = ops.cast(self.attention.weights_dropout(weights, training=training), values.dtype)
        return ops.matmul(dropped, projected_values), weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "projected_length": self.projected_length,
                "share_projection": self.share_projection,
            }
        )
        return config
