"""Self-attention that sees relative positions: Shaw et al. (2018), TENER (Yan et al., 2019) and
Transformer-XL (Dai et al., 2019).

A model with these layers adds no absolute position to its embeddings: the attention scores
themselves depend on the signed distance between query and key, so shifting every position by the
same amount changes nothing, and left differs from right.

Both are `MultiHeadAttention` with the same projections, masks and key/value cache; they only
replace the per-head attention. Positions: queries start at `query_offset` (the cache index while
decoding, else 0) and keys at 0, so cached incremental decoding sees the distances of the full pass.
The relative terms are built as [T, S, d_head] tensors shared by the batch and the heads: simple,
and small at the lengths these models take (128 x 128 x 64 floats is 4 MiB per layer).
"""

import math

import keras
from keras import ops

from tfx_transformer.layers.attention import MultiHeadAttention, masked_softmax
from tfx_transformer.layers.position import sinusoid
from tfx_transformer.layers.validation import check_positive_int

RELATIVE_ATTENTION = ("shaw", "tener", "transformer_xl")


def relative_distances(query_length, key_length, query_offset=0):
    """[T, S] int: key position minus query position (negative = the key is to the left)."""
    query_positions = ops.arange(query_length) + query_offset
    key_positions = ops.arange(key_length)
    return ops.expand_dims(key_positions, 0) - ops.expand_dims(query_positions, 1)


class RelativeAttention(MultiHeadAttention):
    """What the relative attentions share: position-aware `compute_scores(queries, keys,
    query_offset)` -> float32 [B, h, T, S], then softmax, dropout and the weighted values (plus
    `value_term(weights, ...)`, for Shaw's relative values)."""

    def value_term(self, weights, query_length, key_length, query_offset):
        return None

    def _attend(self, queries, keys, values, attention_mask, query_offset, training):
        weights = masked_softmax(self.compute_scores(queries, keys, query_offset), attention_mask)
        dropped = ops.cast(self.attention.weights_dropout(weights, training=training), values.dtype)
        context = ops.matmul(dropped, values)
        extra = self.value_term(dropped, ops.shape(queries)[2], ops.shape(keys)[2], query_offset)
        return (context if extra is None else context + extra), weights


@keras.saving.register_keras_serializable(package="tfx_transformer")
class ShawRelativeAttention(RelativeAttention):
    """Multi-head self-attention with Shaw et al.'s relative position representations.

    e_ij = q_i . (k_j + a^K_ij) / sqrt(d_head);  z_i = sum_j softmax(e)_ij (v_j + a^V_ij)

    a^K_ij = w^K[clip(j - i, -max_distance, max_distance)], learned, shared by the heads (as in
    the paper); a^V likewise when `use_values` (the paper's default; its ablation found the
    key term does most of the work).
    """

    def __init__(self, num_heads, max_distance=16, use_values=True, **kwargs):
        score = kwargs.pop("score", "scaled_dot")
        if score != "scaled_dot":
            raise ValueError(f"Shaw relative attention uses the scaled dot score. Received: score={score!r}")
        super().__init__(num_heads, score=score, **kwargs)
        check_positive_int("max_distance", max_distance)
        self.max_distance = max_distance
        self.use_values = use_values

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        table_shape = (2 * self.max_distance + 1, self.head_size)
        self.relative_keys = self.add_weight(
            name="relative_keys", shape=table_shape, initializer="glorot_uniform"
        )
        self.relative_values = None
        if self.use_values:
            self.relative_values = self.add_weight(
                name="relative_values", shape=table_shape, initializer="glorot_uniform"
            )

    def relative_embeddings(self, table, query_length, key_length, query_offset=0):
        """[T, S, d_head]: the table's row for each clipped distance."""
        distances = relative_distances(query_length, key_length, query_offset)
        rows = ops.clip(distances, -self.max_distance, self.max_distance) + self.max_distance
        return ops.take(ops.cast(table, self.compute_dtype), rows, axis=0)

    def compute_scores(self, queries, keys, query_offset=0):
        """float32 [B, h, T, S] logits before masking."""
        query_length, key_length = ops.shape(queries)[2], ops.shape(keys)[2]
        relative_keys = self.relative_embeddings(
            self.relative_keys, query_length, key_length, query_offset
        )
        queries = queries * ops.cast(1.0 / math.sqrt(self.head_size), queries.dtype)
        scores = ops.einsum("bhtd,bhsd->bhts", queries, keys) + ops.einsum(
            "bhtd,tsd->bhts", queries, relative_keys
        )
        return ops.cast(scores, "float32")

    def value_term(self, weights, query_length, key_length, query_offset):
        if self.relative_values is None:
            return None
        relative_values = self.relative_embeddings(
            self.relative_values, query_length, key_length, query_offset
        )
        return ops.einsum("bhts,tsd->bhtd", weights, relative_values)

    def get_config(self):
        config = super().get_config()
        config.update({"max_distance": self.max_distance, "use_values": self.use_values})
        return config


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TenerAttention(RelativeAttention):
    """Multi-head self-attention with TENER's direction- and distance-aware relative encoding.

    A_tj = q_t . k_j + q_t . R_{t-j} + u . k_j + v . R_{t-j}  (TENER, eq. 14-17)

    R_{t-j} is the sinusoidal encoding of the signed distance (d_head features, not projected):
    its sine half changes sign with the direction, so the score tells left from right, which the
    dot product of two absolute sinusoidal encodings cannot. u and v are learned per head. TENER
    drops the 1/sqrt(d) scale ("un-scaled" attention sharpens the weights, which suits tagging);
    `scale=True` puts it back. Unlike TENER's code, keys keep their projection W_k, so the weights
    match every other attention layer here.
    """

    def __init__(self, num_heads, scale=False, max_wavelength=10000.0, **kwargs):
        score = kwargs.pop("score", "dot")
        if score not in ("dot", "scaled_dot"):
            raise ValueError(f"TENER attention uses a dot score. Received: score={score!r}")
        super().__init__(num_heads, score="dot", **kwargs)
        self.scale = scale
        self.max_wavelength = max_wavelength

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        bias_shape = (self.num_heads, self.head_size)
        self.content_bias = self.add_weight(
            name="content_bias", shape=bias_shape, initializer="glorot_normal"
        )  # u
        self.position_bias = self.add_weight(
            name="position_bias", shape=bias_shape, initializer="glorot_normal"
        )  # v

    def relative_encoding(self, query_length, key_length, query_offset=0):
        """[T, S, d_head]: R_{t-j}, the sinusoid of query position minus key position."""
        distances = -relative_distances(query_length, key_length, query_offset)
        return sinusoid(distances, self.head_size, self.max_wavelength, self.compute_dtype)

    def compute_scores(self, queries, keys, query_offset=0):
        """float32 [B, h, T, S] logits before masking."""
        encoding = self.relative_encoding(ops.shape(queries)[2], ops.shape(keys)[2], query_offset)
        content_bias = ops.cast(self.content_bias, queries.dtype)[None, :, None, :]  # (1, h, 1, d)
        position_bias = ops.cast(self.position_bias, queries.dtype)[None, :, None, :]
        scores = ops.einsum("bhtd,bhsd->bhts", queries + content_bias, keys) + ops.einsum(
            "bhtd,tsd->bhts", queries + position_bias, encoding
        )
        scores = ops.cast(scores, "float32")
        if self.scale:
            scores = scores / math.sqrt(self.head_size)
        return scores


    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "max_wavelength": self.max_wavelength})
        return config


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TransformerXLAttention(RelativeAttention):
    """Multi-head self-attention with Transformer-XL's relative position encoding.

    A_ij = (q_i + u) . k_j + (q_i + v) . W_R R_{i-j}, scaled by 1/sqrt(d_head)  (Dai et al. eq. 5
    with TF's u, v per head). R_{i-j} is the sinusoid of the query-minus-key distance at d_model
    features, projected per head by W_R. Queries may start after a memory (`query_offset`): the
    distances to memory keys are then the true ones, which is what lets a segment reuse the
    previous segment's states.

    The position term is computed once per distinct distance (T + S - 1 of them), [B, h, T,
    T + S - 1], then moved into [B, h, T, S] by Transformer-XL's "relative shift" (a pad and two
    reshapes, see `relative_shift`).
    """

    def __init__(self, num_heads, max_wavelength=10000.0, **kwargs):
        kwargs.pop("score", None)
        super().__init__(num_heads, score="scaled_dot", **kwargs)
        self.max_wavelength = max_wavelength

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.position_dense = keras.layers.EinsumDense(
            "ld,dhk->lhk",
            output_shape=(self.num_heads, self.head_size),
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="position",
        )  # W_R
        self.position_dense.build((None, self._d_model))
        bias_shape = (self.num_heads, self.head_size)
        self.content_bias = self.add_weight(name="content_bias", shape=bias_shape, initializer="zeros")
        self.position_bias = self.add_weight(name="position_bias", shape=bias_shape, initializer="zeros")

    def compute_scores(self, queries, keys, query_offset=0):
        """float32 [B, h, T, S] logits before masking."""
        query_length, key_length = ops.shape(queries)[2], ops.shape(keys)[2]
        # Every distance i - j that occurs, largest first: column l holds (largest - l).
        largest = query_offset + query_length - 1
        distances = largest - ops.arange(query_length + key_length - 1)
        encoding = sinusoid(distances, self._d_model, self.max_wavelength, self.compute_dtype)
        projected = self.position_dense(encoding)  # (L, h, d_head): W_R R
        content_bias = ops.cast(self.content_bias, queries.dtype)[None, :, None, :]
        position_bias = ops.cast(self.position_bias, queries.dtype)[None, :, None, :]
        content = ops.matmul(queries + content_bias, ops.swapaxes(keys, -1, -2))
        by_distance = ops.matmul(
            queries + position_bias, ops.transpose(projected, (1, 2, 0))[None]
        )  # (B, h, T, L)
        position = relative_shift(by_distance, query_length, key_length)
        scores = (content + position) * ops.cast(1.0 / math.sqrt(self.head_size), content.dtype)
        return ops.cast(scores, "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config


def relative_shift(by_distance, query_length, key_length):
    """[B, h, T, T + S - 1] scores per distance (column l: distance i - j = largest - l) ->
    [B, h, T, S] scores per key.

    Query i needs columns T - 1 - i + j, j = 0 .. S - 1: a window that moves one column left per
    row. With one padding column the rows are T + S long; flattened, row i's window then starts
    at (T - 1) + i (T + S - 1), so dropping the first T - 1 values and cutting rows of T + S - 1
    lines every window up at column 0 (Dai et al.'s trick, exact also for T = 1).
    """
    batch, heads = ops.shape(by_distance)[0], ops.shape(by_distance)[1]
    width = query_length + key_length - 1
    padded = ops.pad(by_distance, [[0, 0], [0, 0], [0, 0], [0, 1]])  # (B, h, T, T + S)
    flat = ops.reshape(padded, (batch, heads, -1))
    windows = flat[:, :, query_length - 1 : query_length - 1 + query_length * width]
    return ops.reshape(windows, (batch, heads, query_length, width))[..., :key_length]


def relative_attention_layer(kind, num_heads, max_distance=16, use_values=True, **kwargs):
    """The self-attention layer for `kind` (see RELATIVE_ATTENTION), with MultiHeadAttention's kwargs."""
    kwargs.pop("score", None)
    if kind == "shaw":
        return ShawRelativeAttention(
            num_heads, max_distance=max_distance, use_values=use_values, **kwargs
        )
    if kind == "tener":
        return TenerAttention(num_heads, **kwargs)
    if kind == "transformer_xl":
        return TransformerXLAttention(num_heads, **kwargs)
    raise ValueError(f"relative attention must be one of {RELATIVE_ATTENTION}. Received: {kind!r}")
