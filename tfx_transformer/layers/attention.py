"""Attention with a selectable score function, and multi-head attention with a key/value cache.

Masks follow `tfx_transformer.layers.masks`: boolean, True = may attend, shaped [B, T, S] or
broadcastable to it. Scores are masked and normalized in float32 so that mixed precision neither
overflows the fill value nor loses the softmax's small weights.
"""

import math

import keras
from keras import ops

from tfx_transformer.layers.cache import write_positions
from tfx_transformer.layers.dropout import Dropout
from tfx_transformer.layers.fused_attention import cudnn_implementation, fused_attention
from tfx_transformer.layers.masks import masked_fill_value
from tfx_transformer.layers.validation import check_choice, check_positive_int, check_rate

SCORE_FUNCTIONS = ("scaled_dot", "dot", "cosine", "additive")


@keras.saving.register_keras_serializable(package="tfx_transformer")
class Attention(keras.layers.Layer):
    """Attention over the last two axes: softmax(score(q, k)) v.

    Scores:
      - "scaled_dot" (default): q.k / sqrt(d_k), the Transformer's.
      - "dot": q.k, Luong's multiplicative score without a scale.
      - "cosine": cos(q, k), optionally multiplied by `cosine_scale`.
      - "additive": v^T tanh(W_q q + W_k k), Bahdanau's MLP score with `additive_units` hidden units.

    Call arguments:
      query: [..., T, d_k]; key: [..., S, d_k]; value: [..., S, d_v] (defaults to key).
      attention_mask: bool, broadcastable to [..., T, S], True = may attend.
      return_attention_scores: also return the attention weights [..., T, S] (float32).

    Returns [..., T, d_v] in the layer's compute dtype, and the weights when asked.
    """

    def __init__(
        self,
        score="scaled_dot",
        dropout=0.0,
        additive_units=None,
        cosine_scale=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("score", score, SCORE_FUNCTIONS)
        check_rate("dropout", dropout)
        if additive_units is not None:
            check_positive_int("additive_units", additive_units)
        self.score = score
        self.dropout = dropout
        self.additive_units = additive_units
        self.cosine_scale = cosine_scale
        self.weights_dropout = Dropout(dropout, dtype=self.dtype_policy)

    def build(self, query_shape, key_shape=None, value_shape=None):
        if self.score == "additive":
            key_shape = query_shape if key_shape is None else key_shape
            units = self.additive_units or query_shape[-1]
            self.query_kernel = self.add_weight(
                name="query_kernel", shape=(query_shape[-1], units), initializer="glorot_uniform"
            )
            self.key_kernel = self.add_weight(
                name="key_kernel", shape=(key_shape[-1], units), initializer="glorot_uniform"
            )
            self.score_vector = self.add_weight(
                name="score_vector", shape=(units,), initializer="glorot_uniform"
            )
        self.built = True

    def compute_scores(self, query, key):
        """Unnormalized float32 scores [..., T, S]."""
        if self.score == "scaled_dot":
            # Scaling q before the product keeps the products small under half precision.
            query = query * ops.cast(1.0 / math.sqrt(query.shape[-1]), query.dtype)
            scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
        elif self.score == "dot":
            scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
        elif self.score == "cosine":
            query = _l2_normalize(ops.cast(query, "float32"))
            key = _l2_normalize(ops.cast(key, "float32"))
            scores = ops.matmul(query, ops.swapaxes(key, -1, -2)) * self.cosine_scale
        else:  # additive
            projected_query = ops.matmul(query, ops.cast(self.query_kernel, query.dtype))
            projected_key = ops.matmul(key, ops.cast(self.key_kernel, key.dtype))
            # (..., T, 1, U) + (..., 1, S, U) -> (..., T, S, U)
            hidden = ops.tanh(
                ops.expand_dims(projected_query, -2) + ops.expand_dims(projected_key, -3)
            )
            scores = ops.matmul(hidden, ops.cast(self.score_vector, hidden.dtype))  # (..., T, S)
        return ops.cast(scores, "float32")

    def call(
        self,
        query,
        key,
        value=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        value = key if value is None else value
        scores = self.compute_scores(query, key)  # (..., T, S) float32
        weights = masked_softmax(scores, attention_mask)
        dropped = self.weights_dropout(weights, training=training)
        output = ops.matmul(ops.cast(dropped, value.dtype), value)  # (..., T, d_v)
        if return_attention_scores:
            return output, weights
        return output

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        value_shape = key_shape if value_shape is None else value_shape
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "score": self.score,
                "dropout": self.dropout,
                "additive_units": self.additive_units,
                "cosine_scale": self.cosine_scale,
            }
        )
        return config


def _l2_normalize(x, epsilon=1e-12):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def masked_softmax(scores, attention_mask=None):
    """Softmax over the last axis of float32 `scores`, with masked positions filled first.

    A row with every key masked gets uniform weights over its (masked) keys rather than NaN; the
    models never read such rows, they only must not poison the batch.
    """
    scores = ops.cast(scores, "float32")
    if attention_mask is not None:
        fill = ops.cast(masked_fill_value("float32"), "float32")
        scores = ops.where(ops.cast(attention_mask, "bool"), scores, fill)
    # Written out rather than ops.softmax, which warns on the one-key rows that the first
    # decoder position legitimately has.
    exponentials = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
    return exponentials / ops.sum(exponentials, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="tfx_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention: h heads of size d_model / h, concatenated, projected by W_o.

    Weight layout matches `keras.layers.MultiHeadAttention(num_heads, key_dim=d_model // h)`:
    query/key/value kernels [d_model, h, d_head], output kernel [h, d_head, d_model].

    Call arguments:
      query: [B, T, d_model]. value: [B, S, d_model] (defaults to query: self-attention).
      key: [B, S, d_model] (defaults to value).
      attention_mask: bool broadcastable to [B, T, S], True = may attend.
      cache: a (keys, values) pair of projected tensors [B, h, L, d_head] from earlier steps (a
        pair rather than one stacked tensor, so that decoding never copies it to split it).
        - With `cache_update_index` (self-attention while decoding): the new keys and values of
          `query`'s positions are written into the cache at that index, attention runs over the
          whole cache (mask the positions not yet written), and the updated cache is returned.
        - Without it (cross-attention while decoding): the cached keys and values (see
          `project_key_value`) are used as they are and `key`/`value` are ignored.
      query_offset: the key position of the first query (keys start at 0), for position-aware
        subclasses: the cache index while decoding (implied by `cache_update_index`), or the
        length of a memory prepended to the keys (Transformer-XL). Content-only attention
        ignores it.
      return_attention_scores: also return the weights [B, h, T, S] (float32).

    Returns the output [B, T, d_model], then the weights when asked, then the cache when one was
    passed: `output`, `(output, weights)`, `(output, cache)` or `(output, weights, cache)`.

    On JAX, scaled dot-product attention without a cache, without weights asked for and without
    attention dropout (rate 0, or not training) runs as one `keras.ops.dot_product_attention`
    (cuDNN's fused kernel on a GPU where it takes the shapes, XLA's otherwise), on heads laid out
    [B, T, h, d_head] so that neither side transposes; `fuse_attention = False` turns it off.
    Where cuDNN runs it, a mask of right padding (and causality) reaches cuDNN as each row's
    number of keys rather than as a bias (`tfx_transformer.layers.fused_attention`);
    `padding_as_lengths = False` keeps the bias.
    """

    fuse_attention = True
    padding_as_lengths = True

    def __init__(
        self,
        num_heads,
        d_model=None,
        score="scaled_dot",
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        if d_model is not None:
            check_positive_int("d_model", d_model)
            _check_divisible(d_model, num_heads)
        self.num_heads = num_heads
        self.d_model = d_model
        self.score = score
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.attention = Attention(score=score, dropout=dropout, dtype=self.dtype_policy, name="attention")

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        d_model = self.d_model or query_shape[-1]
        _check_divisible(d_model, self.num_heads)
        self._d_model = d_model
        self.head_size = d_model // self.num_heads

        def head_projection(name, input_shape):
            layer = keras.layers.EinsumDense(
                "btd,dhk->bthk",
                output_shape=(None, self.num_heads, self.head_size),
                bias_axes="hk" if self.use_bias else None,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build(input_shape)
            return layer

        self.query_dense = head_projection("query", query_shape)
        self.key_dense = head_projection("key", key_shape)
        self.value_dense = head_projection("value", value_shape)
        self.output_dense = keras.layers.EinsumDense(
            "bthk,hkd->btd",
            output_shape=(None, d_model),
            bias_axes="d" if self.use_bias else None,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="attention_output",
        )
        self.output_dense.build((None, None, self.num_heads, self.head_size))
        head_shape = (None, self.num_heads, None, self.head_size)
        self.attention.build(head_shape, head_shape, head_shape)
        self.built = True

    def _project_heads(self, x, *denses, heads_first=True):
        """x [B, T, d_in] through head projections sharing that input -> one [B, h, T, d_head]
        tensor per projection ([B, T, h, d_head] without `heads_first`).

        The projections run as one 2-D matmul with their kernels side by side: a 3-D einsum
        becomes a batched matmul whose kernel gradient is summed over the batch afterwards, and
        three narrow matmuls use the CPU worse than one wide one.
        """
        d_in = x.shape[-1]
        width = self.num_heads * self.head_size
        kernels = [ops.reshape(ops.cast(dense.kernel, x.dtype), (d_in, width)) for dense in denses]
        kernel = kernels[0] if len(kernels) == 1 else ops.concatenate(kernels, axis=-1)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        y = ops.matmul(ops.reshape(x, (-1, d_in)), kernel)  # (B * T, n * h * d_head)
        if self.use_bias:
            biases = [ops.reshape(ops.cast(dense.bias, x.dtype), (width,)) for dense in denses]
            y = y + (biases[0] if len(biases) == 1 else ops.concatenate(biases, axis=-1))
        parts = ops.split(y, len(denses), axis=-1) if len(denses) > 1 else [y]
        parts = [ops.reshape(part, (batch, length, self.num_heads, self.head_size)) for part in parts]
        if heads_first:
            parts = [ops.transpose(part, (0, 2, 1, 3)) for part in parts]
        return tuple(parts)

    def _merge_heads(self, context, heads_first=True):
        """[B, h, T, d_head] ([B, T, h, d_head] without `heads_first`) -> W_o applied to the
        concatenated heads, [B, T, d_model]."""
        if heads_first:
            context = ops.transpose(context, (0, 2, 1, 3))
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        width = self.num_heads * self.head_size
        merged = ops.reshape(context, (-1, width))
        kernel = ops.reshape(ops.cast(self.output_dense.kernel, merged.dtype), (width, self._d_model))
        output = ops.matmul(merged, kernel)
        if self.use_bias:
            output = output + ops.cast(self.output_dense.bias, output.dtype)
        return ops.reshape(output, (batch, length, self._d_model))

    def project_key_value(self, key, value=None, heads_first=True):
        """(keys, values), each [B, h, S, d_head]: the cross-attention cache."""
        if value is None or value is key:
            return self._project_heads(key, self.key_dense, self.value_dense, heads_first=heads_first)
        (keys,) = self._project_heads(key, self.key_dense, heads_first=heads_first)
        (values,) = self._project_heads(value, self.value_dense, heads_first=heads_first)
        return keys, values

    def _project_query_key_value(self, query, key, value, heads_first=True):
        """(queries, keys, values): one matmul for all three in self-attention."""
        if key is query and value is query:
            return self._project_heads(
                query, self.query_dense, self.key_dense, self.value_dense, heads_first=heads_first
            )
        (queries,) = self._project_heads(query, self.query_dense, heads_first=heads_first)
        return (queries, *self.project_key_value(key, value, heads_first=heads_first))

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        cache=None,
        cache_update_index=None,
        query_offset=None,
        return_attention_scores=False,
        training=None,
    ):
        value = query if value is None else value
        key = value if key is None else key
        if cache is None and not return_attention_scores and self._fusable(training):
            return self._fused(query, key, value, attention_mask)
        if cache is not None and cache_update_index is None:
            (queries,) = self._project_heads(query, self.query_dense)
            keys, values = cache  # (B, h, S, d_head) each: cross-attention while decoding
        else:  # queries (B, h, T, d_head), keys and values (B, h, S, d_head)
            queries, keys, values = self._project_query_key_value(query, key, value)
        if cache is not None and cache_update_index is not None:
            cached_keys, cached_values = cache  # (B, h, L, d_head) each
            new_keys, new_values = keys, values  # (B, h, T, d_head) each
            keys = write_positions(
                cached_keys, ops.cast(new_keys, cached_keys.dtype), cache_update_index, axis=2
            )
            values = write_positions(
                cached_values, ops.cast(new_values, cached_values.dtype), cache_update_index, axis=2
            )
            cache = (keys, values)
        if attention_mask is not None:
            attention_mask = ops.expand_dims(attention_mask, axis=1)  # (B, 1, T, S): every head
        if cache_update_index is not None:
            query_offset = cache_update_index
        elif query_offset is None:
            query_offset = 0
        context, weights = self._attend(
            queries, keys, values, attention_mask, query_offset, training
        )  # (B, h, T, d_head), (B, h, T, S)
        output = self._merge_heads(context)  # (B, T, d_model)
        outputs = (output,)
        if return_attention_scores:
            outputs += (weights,)
        if cache is not None:
            outputs += (tuple(cache),)
        return outputs[0] if len(outputs) == 1 else outputs

    def _fusable(self, training):
        return (
            self.fuse_attention
            and keras.backend.backend() == "jax"
            and self.score == "scaled_dot"
            and type(self)._attend is MultiHeadAttention._attend  # position-aware ones score their own
            and (not training or not self.dropout)
        )

    def _fused(self, query, key, value, attention_mask):
        queries, keys, values = self._project_query_key_value(query, key, value, heads_first=False)
        implementation = None
        if attention_mask is not None and self.padding_as_lengths:
            implementation = cudnn_implementation(queries, keys, values)
        context = fused_attention(
            queries, keys, values, attention_mask, 1.0 / math.sqrt(self.head_size), implementation
        )  # (B, T, h, d_head)
        return self._merge_heads(context, heads_first=False)

    def _attend(self, queries, keys, values, attention_mask, query_offset, training):
        """Per-head attention [B, h, T, d_head] x [B, h, S, d_head] -> (context, weights).

        `query_offset` is the position of the first query when keys start at position 0 (the
        cache index while decoding); content-only attention ignores it, relative attention
        (`tfx_transformer.layers.relative`) overrides this method and needs it.
        """
        return self.attention(
            queries,
            keys,
            values,
            attention_mask=attention_mask,
            return_attention_scores=True,
            training=training,
        )

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self.d_model or query_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "d_model": self.d_model,
                "score": self.score,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def _check_divisible(d_model, num_heads):
    if d_model % num_heads:
        raise ValueError(
            "`d_model` must be divisible by `num_heads` (each head has d_model / num_heads "
            f"dimensions). Received: d_model={d_model}, num_heads={num_heads}"
        )
