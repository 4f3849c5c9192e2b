"""The tagging export's serving graph: raw text in, tokens and their tags out.

`serving_default` takes `text` [None] and returns `tokens` [None, W] (the text split on
whitespace), `tags` [None, W] (one per token; "" past each text's end, and past `max_length`
tokens for a model with learned positions) and `length` int32 [None] (the tagged tokens per
text).
"""

import keras
import tensorflow as tf

from tfx_transformer.compiling import tf_function
from tfx_transformer.tasks.serving import ServingModule, info_path, repair_utf8
from tfx_transformer.tokens import PAD_ID, UNK_ID


class TaggingServingModule(ServingModule):
    """The serving graph of a `TransformerTagger`: whitespace tokens -> word ids -> tags."""

    info_path = info_path("tagging")

    def __init__(self, model, vocabulary):
        if model.num_tags != vocabulary.num_tags:
            raise ValueError(
                f"The model predicts {model.num_tags} tags but the vocabulary has {vocabulary.num_tags}."
            )
        super().__init__(model, name="tagger")
        config = model.model_config
        # Learned positions stop at max_length; sinusoidal and relative ones go on, so only a
        # model with learned positions cuts long texts (the tokens past the cut get tag "").
        self.max_length = config.max_length if config.position == "learned" else None
        # Index 0 is padding, 1 unknown, then the words: the ids the model was trained on.
        self.lookup = keras.layers.StringLookup(
            vocabulary=vocabulary.words[2:], mask_token=vocabulary.words[0],
            oov_token=vocabulary.words[1], num_oov_indices=1, name="word_lookup",
        )
        self.lookup.build((None, None))
        self.tag_names = tf.constant([""] + vocabulary.tags[1:])  # the padding tag reads ""
        self.info = {
            "max_tokens": self.max_length,
            "tags": vocabulary.tags[1:],
            "vocab_size": vocabulary.vocab_size,
            "model": config.to_dict(),
        }
        self._tag_ids = tf_function(
            self.model.predict_tags, input_signature=[tf.TensorSpec([None, None], tf.int32)]
        )

    @property
    def text_layer(self):
        return self.lookup

    def _serve(self, text):
        tokens = tf.strings.split(repair_utf8(text)).to_tensor("")  # (B, W)
        width = tf.shape(tokens)[1]
        kept = tokens if self.max_length is None else tokens[:, : self.max_length]
        ids = tf.cast(self.lookup(kept), tf.int32)
        # Only the padding of the dense batch is padding: a text's own "<pad>" is an unknown word.
        ids = tf.where(kept == "", PAD_ID, tf.where(ids == PAD_ID, UNK_ID, ids))
        # A batch of empty texts still gets one (padding) position to run on.
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]])
        tag_ids = self._tag_ids(ids)[:, : tf.shape(kept)[1]]
        tags = tf.gather(self.tag_names, tag_ids)
        tags = tf.pad(tags, [[0, 0], [0, width - tf.shape(tags)[1]]], constant_values="")
        return {
            "tokens": tokens,
            "tags": tags,
            "length": tf.reduce_sum(tf.cast(tag_ids != 0, tf.int32), axis=1),
        }
