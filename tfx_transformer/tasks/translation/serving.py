"""The translation export's serving graph: raw text in, translation and score out.

`serving_default` takes `text`: tf.string [None] and returns `translation`: tf.string [None] and
`score`: float32 [None] (the beam's log-probability over the GNMT length penalty). Inside the
graph: invalid UTF-8 is replaced (U+FFFD), the text is tokenized with SentencePiece, cut to the
model's `max_length` tokens (end token included), decoded by cached beam search, and
detokenized. An empty (or all-blank) input gives an empty translation with score 0.
"""

import tensorflow as tf

from tfx_transformer.decoding import translate_ids
from tfx_transformer.tasks.serving import ServingModule, info_path, repair_utf8
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID


class TranslationServingModule(ServingModule):
    """The serving graph: a tf.Module holding the model, the tokenizer and the decode settings."""

    info_path = info_path("translation")

    def __init__(self, model, tokenizer, beam_size=4, length_penalty=0.6, max_length=None,
                 jit_compile=False):
        super().__init__(model, name="translator")
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"`beam_size` must be a positive integer. Received: {beam_size!r}")
        config = model.model_config
        self.tokenizer = tokenizer.tf_tokenizer()
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.max_input_length = config.max_length
        self.max_output_length = int(max_length or config.max_length)
        if not 0 < self.max_output_length <= config.max_length:
            raise ValueError(
                f"`max_length` must be in [1, {config.max_length}] for this model. "
                f"Received: {max_length!r}"
            )
        self.info = {
            "beam_size": beam_size,
            "length_penalty": self.length_penalty,
            "max_input_tokens": self.max_input_length,
            "max_output_tokens": self.max_output_length,
            "vocab_size": config.vocab_size,
            "model": config.to_dict(),
        }
        # Strings never enter the numeric part, so it alone may be XLA-compiled.
        self._decode_ids = tf.function(
            self._decode, input_signature=[tf.TensorSpec([None, None], tf.int32)],
            jit_compile=jit_compile,
        )

    @property
    def text_layer(self):
        return self.tokenizer

    def _decode(self, source_ids):
        return translate_ids(
            self.model, source_ids, self.beam_size, self.length_penalty, self.max_output_length
        )

    def _serve(self, text):
        text = repair_utf8(text)
        empty = tf.equal(tf.strings.length(tf.strings.strip(text)), 0)
        pieces = self.tokenizer.tokenize(text)  # ragged [B, (n)]
        pieces = tf.cast(pieces[:, : self.max_input_length - 1], tf.int32)
        end = tf.fill([tf.shape(text)[0], 1], END_ID)
        source = tf.concat([pieces, tf.RaggedTensor.from_tensor(end)], axis=1).to_tensor(PAD_ID)
        tokens, scores = self._decode_ids(source)
        # Keep what precedes the first end token; padding and the start token are not text.
        before_end = tf.equal(tf.math.cumsum(tf.cast(tf.equal(tokens, END_ID), tf.int32), axis=1), 0)
        keep = tf.logical_and(before_end, tf.logical_and(tokens != PAD_ID, tokens != START_ID))
        words = self.tokenizer.detokenize(tf.ragged.boolean_mask(tokens, keep))
        return {
            "translation": tf.where(empty, tf.constant("", tf.string), words),
            "score": tf.where(empty, tf.zeros_like(scores), scores),
        }
