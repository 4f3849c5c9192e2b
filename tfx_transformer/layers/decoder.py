"""The decoder: masked self-attention, cross-attention and a feed-forward network per block."""

import keras

from tfx_transformer.layers.block import TransformerBlockBase, TransformerStackBase
from tfx_transformer.layers.cache import empty_block_caches


@keras.saving.register_keras_serializable(package="tfx_transformer")
class DecoderBlock(TransformerBlockBase):
    """Masked self-attention, encoder-decoder attention, FFN, each with residual + LayerNorm.

    Call arguments:
      x: [B, T, d_model]; encoder_output: [B, S, d_model] (may be None when
        `cross_attention_cache` holds its projected keys and values).
      self_attention_mask: bool broadcastable to [B, T, T] (causal and padding), or to
        [B, T, L] against a cache of length L.
      cross_attention_mask: bool broadcastable to [B, T, S] (source padding).
      self_attention_cache: (keys, values), each [B, h, L, d_head], of earlier positions; the
        positions of `x` are written at `cache_update_index`.
      cross_attention_cache: (keys, values), each [B, h, S, d_head], see
        `MultiHeadAttention.project_key_value`.
      return_attention_scores: also return (self weights [B, h, T, T|L], cross weights [B, h, T, S]).

    Returns x, then the two weight tensors when asked, then the updated self-attention cache
    when one was passed.
    """

    def build(self, x_shape, encoder_output_shape=None):
        encoder_output_shape = encoder_output_shape or (None, None, self.d_model)
        self._build_sublayer(
            "self_attention",
            self._attention_layer("self_attention", self_attention=True),
            x_shape,
            x_shape,
        )
        self._build_sublayer(
            "cross_attention",
            self._attention_layer("cross_attention"),
            x_shape,
            encoder_output_shape,
        )
        self._build_sublayer("feed_forward", self._feed_forward_layer(), x_shape)
        self.built = True

    def call(
        self,
        x,
        encoder_output=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        self_attention_cache=None,
        cache_update_index=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
    ):
        if encoder_output is None and cross_attention_cache is None:
            raise ValueError("DecoderBlock needs `encoder_output` or `cross_attention_cache`.")

        def self_attend(h):
            if self_attention_cache is None:
                # Weights only when asked: without them the attention can run fused.
                result = self.self_attention(
                    h,
                    attention_mask=self_attention_mask,
                    return_attention_scores=return_attention_scores,
                    training=training,
                )
                output, weights = result if return_attention_scores else (result, None)
                return output, (weights, None)
            output, weights, cache = self.self_attention(
                h,
                attention_mask=self_attention_mask,
                cache=self_attention_cache,
                cache_update_index=cache_update_index,
                return_attention_scores=True,
                training=training,
            )
            return output, (weights, cache)

        def cross_attend(h):
            asked = return_attention_scores or cross_attention_cache is not None
            result = self.cross_attention(
                h,
                encoder_output,
                attention_mask=cross_attention_mask,
                cache=cross_attention_cache,
                return_attention_scores=asked,
                training=training,
            )
            return result[:2] if asked else (result, None)

        def feed_forward(h):
            return self.feed_forward(h, training=training), None

        x, (self_weights, new_cache) = self._residual(
            x, self.self_attention_norm, self.self_attention_dropout, self_attend, training
        )
        x, cross_weights = self._residual(
            x, self.cross_attention_norm, self.cross_attention_dropout, cross_attend, training
        )
        x, _ = self._residual(
            x, self.feed_forward_norm, self.feed_forward_dropout, feed_forward, training
        )
        outputs = (x,)
        if return_attention_scores:
            outputs += (self_weights, cross_weights)
        if self_attention_cache is not None:
            outputs += (new_cache,)
        return outputs[0] if len(outputs) == 1 else outputs


@keras.saving.register_keras_serializable(package="tfx_transformer")
class Decoder(TransformerStackBase):
    """`num_layers` DecoderBlocks over already embedded targets [B, T, d_model].

    Caches are tuples with one (keys, values) pair per block: self-attention pairs of
    [B, h, L, d_head], cross-attention pairs of [B, h, S, d_head] (from
    `project_cross_attention_cache`). Tuples, not one stacked tensor: a decoding step then reads
    and writes each block's cache without copying the others.

    Returns x [B, T, d_model]; with `return_attention_scores` also the lists of self and cross
    weights per block; with a self-attention cache also the updated cache.
    """

    block_class = DecoderBlock

    def build(self, x_shape, encoder_output_shape=None):
        for block in self.blocks:
            block.build(x_shape, encoder_output_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)
        self.built = True

    def project_cross_attention_cache(self, encoder_output):
        """[B, S, d_model] -> one (keys, values) pair per block, computed once per source."""
        return tuple(
            block.cross_attention.project_key_value(encoder_output) for block in self.blocks
        )

    def empty_self_attention_cache(self, batch_size, max_length):
        """One (keys, values) pair of zeros [B, h, L, d_head] per block, filled while decoding."""
        return empty_block_caches(
            len(self.blocks), self.block_kwargs, batch_size, max_length, self.compute_dtype
        )

    def call(
        self,
        x,
        encoder_output=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        self_attention_cache=None,
        cache_update_index=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
    ):
        self_weights, cross_weights, new_caches = [], [], []
        for i, block in enumerate(self.blocks):
            outputs = block(
                x,
                encoder_output,
                self_attention_mask=self_attention_mask,
                cross_attention_mask=cross_attention_mask,
                self_attention_cache=(
                    None if self_attention_cache is None else self_attention_cache[i]
                ),
                cache_update_index=cache_update_index,
                cross_attention_cache=(
                    None if cross_attention_cache is None else cross_attention_cache[i]
                ),
                return_attention_scores=return_attention_scores,
                training=training,
            )
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            x = outputs[0]
            if return_attention_scores:
                self_weights.append(outputs[1])
                cross_weights.append(outputs[2])
            if self_attention_cache is not None:
                new_caches.append(outputs[-1])
        if self.final_norm is not None:
            x = self.final_norm(x)
        outputs = (x,)
        if return_attention_scores:
            outputs += (self_weights, cross_weights)
        if self_attention_cache is not None:
            outputs += (tuple(new_caches),)
        return outputs[0] if len(outputs) == 1 else outputs
