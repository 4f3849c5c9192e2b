"""The encoder: self-attention and a feed-forward network per block, N blocks in a stack."""

import keras

from tfx_transformer.layers.block import TransformerBlockBase, TransformerStackBase


@keras.saving.register_keras_serializable(package="tfx_transformer")
class EncoderBlock(TransformerBlockBase):
    """Self-attention then FFN, each with residual + LayerNorm (paper figure 1, left).

    Call arguments:
      x: [B, S, d_model].
      attention_mask: bool broadcastable to [B, S, S], True = may attend (padding: [B, 1, S]).
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

    def call(self, x, attention_mask=None, return_attention_scores=False, training=None):
        def attend(h):
            return self.self_attention(
                h,
                attention_mask=attention_mask,
                return_attention_scores=True,
                training=training,
            )

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

    Returns [B, S, d_model], and with `return_attention_scores` the list of each block's
    self-attention weights.
    """

    block_class = EncoderBlock

    def build(self, x_shape):
        for block in self.blocks:
            block.build(x_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)
        self.built = True

    def call(self, x, attention_mask=None, return_attention_scores=False, training=None):
        all_weights = []
        for block in self.blocks:
            x, weights = block(
                x, attention_mask=attention_mask, return_attention_scores=True, training=training
            )
            all_weights.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x, all_weights) if return_attention_scores else x
