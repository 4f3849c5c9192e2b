"""The encoder: self-attention and a feed-forward network per block, N blocks in a stack."""

import keras
from keras import ops

from tfx_transformer.layers.block import TransformerBlockBase, TransformerStackBase


@keras.saving.register_keras_serializable(package="tfx_transformer")
class EncoderBlock(TransformerBlockBase):
    """Self-attention then FFN, each with residual + LayerNorm (paper figure 1, left).

    Call arguments:
      x: [B, S, d_model].
      attention_mask: bool broadcastable to [B, S, S], True = may attend (padding: [B, 1, S]);
        with a memory, to [B, S, M + S].
      memory: [B, M, d_model], this block's inputs at M earlier positions (Transformer-XL's
        memory): prepended to the keys and values, never queried. Pass `query_offset=M` so that
        relative attention sees the true distances.
      return_attention_scores: also return the self-attention weights [B, h, S, S].
    """

    def build(self, x_shape):
        self._build_sublayer(
            "self_attention",
            self._attention_layer("self_attention", self_attention=True, causal=False),
            x_shape,
            x_shape,
        )
        self._build_sublayer("feed_forward", self._feed_forward_layer(), x_shape)
        self.built = True

    def call(
        self,
        x,
        attention_mask=None,
        memory=None,
        query_offset=None,
        return_attention_scores=False,
        training=None,
    ):
        def attend(h):
            keys_values = None
            if memory is not None:
                # The memory holds block inputs; under pre-LN the keys see them normalized too.
                remembered = self.self_attention_norm(memory) if self.norm_first else memory
                keys_values = ops.concatenate([ops.cast(remembered, h.dtype), h], axis=1)
            # Weights only when asked: without them the attention can run fused.
            result = self.self_attention(
                h,
                keys_values,
                attention_mask=attention_mask,
                query_offset=query_offset,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            return result if return_attention_scores else (result, None)

        def feed_forward(h):
            return self.feed_forward(h, training=training), None

        x, weights = self._residual(
            x, self.self_attention_norm, self.self_attention_dropout, attend, training
        )
        x, _ = self._residual(
            x, self.feed_forward_norm, self.feed_forward_dropout, feed_forward, training
        )
        return (x, weights) if return_attention_scores else x


@keras.saving.register_keras_serializable(package="tfx_transformer")
class Encoder(TransformerStackBase):
    """`num_layers` EncoderBlocks over already embedded inputs [B, S, d_model].

    With a causal `attention_mask` it is a decoder-only stack (`TransformerLM`); `memory` holds
    one [B, M, d_model] tensor per block (see `EncoderBlock`).

    Returns [B, S, d_model]; with `return_attention_scores` also the list of each block's
    self-attention weights; with `return_block_inputs` also the list of each block's input (what
    the next segment's memory is made of).
    """

    block_class = EncoderBlock

    def build(self, x_shape):
        for block in self.blocks:
            block.build(x_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)
        self.built = True

    def call(
        self,
        x,
        attention_mask=None,
        memory=None,
        query_offset=None,
        return_attention_scores=False,
        return_block_inputs=False,
        training=None,
    ):
        all_weights, block_inputs = [], []
        for i, block in enumerate(self.blocks):
            block_inputs.append(x)
            result = block(
                x,
                attention_mask=attention_mask,
                memory=None if memory is None else memory[i],
                query_offset=query_offset,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            x, weights = result if return_attention_scores else (result, None)
            all_weights.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        outputs = (x,)
        if return_attention_scores:
            outputs += (all_weights,)
        if return_block_inputs:
            outputs += (block_inputs,)
        return outputs[0] if len(outputs) == 1 else outputs
