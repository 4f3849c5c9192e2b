"""`TransformerTagger`: the Transformer's encoder with a classifier on every token (e.g. NER)."""

import keras
from keras import ops

from tfx_transformer.layers import (
    key_padding_mask,
    padding_mask,
    same_segment_mask,
    segment_positions,
)
from tfx_transformer.layers.validation import check_positive_int
from tfx_transformer.models.base import SingleStackModel, ponder_kwargs


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TransformerTagger(SingleStackModel):
    """Encoder + per-token softmax over `num_tags` tags.

    `tagger(token_ids [B, S] int)` -> float32 logits [B, S, num_tags]. Token id 0 is padding and
    is masked; tag id 0 is reserved for padding labels and never predicted (`predict_tags`).
    Packed rows (several sentences one after another in a row, as training on JAX feeds them):
    `tagger({"token_ids": ..., "segment_ids": [B, S]})`, the segment ids numbering a row's
    sentences 1, 2, ... (0 on padding); each sentence then attends only to itself and counts its
    positions from 0, so its logits are those it has alone.
    The config's encoder fields are used (`num_encoder_layers`, `position`, ...); its decoder
    fields are not. With `position="tener"` this is TENER's tagger without the CRF.
    """

    def __init__(self, config=None, num_tags=2, **kwargs):
        check_positive_int("num_tags", num_tags)
        if num_tags < 2:
            raise ValueError(
                f"`num_tags` counts the padding tag 0 too; it must be >= 2. Received: {num_tags}"
            )
        super().__init__(config, **kwargs)
        self.num_tags = num_tags
        self.classifier = keras.layers.Dense(num_tags, dtype=self.dtype_policy, name="classifier")
        self.build()

    def build(self, input_shape=None):
        super().build(input_shape)
        self.classifier.build((None, None, self.model_config.d_model))

    def call(self, token_ids, training=None, return_attention_scores=False):
        segments = None
        if isinstance(token_ids, dict):
            token_ids, segments = token_ids["token_ids"], self._segments(token_ids)
        config = self.model_config
        if segments is None:
            mask = key_padding_mask(token_ids, config.pad_id)  # (B, 1, S)
            x = self.embed(token_ids, training)
        else:
            mask = same_segment_mask(segments, segments)  # (B, S, S)
            x = self.embed(token_ids, training, segment_positions(segments))
        encoded = self.stack(
            x,
            attention_mask=mask,
            return_attention_scores=return_attention_scores,
            training=training,
            **ponder_kwargs(config, padding_mask(token_ids, config.pad_id)),
        )
        if return_attention_scores:
            encoded, weights = encoded
        logits = ops.cast(self.classifier(encoded), "float32")  # (B, S, num_tags)
        return (logits, weights) if return_attention_scores else logits

    def _segments(self, inputs):
        """Packed rows' segment ids, or None."""
        if "segment_ids" not in inputs:
            return None
        refusal = self.model_config.packing_refusal()
        if refusal is not None:
            raise ValueError(f"{refusal}: give it unpacked rows.")
        return inputs["segment_ids"]

    def predict_tags(self, token_ids):
        """[B, S] ids -> [B, S] int32 tag ids in 1..num_tags-1 (0 on padding)."""
        logits = self(token_ids, training=False)
        best = ops.cast(ops.argmax(logits[..., 1:], axis=-1), "int32") + 1
        return ops.where(ops.not_equal(token_ids, self.model_config.pad_id), best, 0)

    def extra_config(self):
        return {"num_tags": self.num_tags}
