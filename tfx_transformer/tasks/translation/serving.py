"""The translation export's serving graph: raw text in, translations and scores out.

Signatures (tensors in, tensors out):
- `serving_default`: `text` tf.string [None] -> `translation` tf.string [None], `score` float32
  [None] (the beam's log-probability over the GNMT length penalty);
- `nbest`: `text` [None] -> `translations` tf.string [None, K], `scores` float32 [None, K], the
  K = beam size beams of each text, best first;
- `score`: `text` [None], `translation` [None] -> `score` float32 [None] (the translation's
  summed log-probability, end token included), `token_scores` float32 [None, T] (per token, 0
  past each one's `length`), `length` int32 [None].
Inside the graph: invalid UTF-8 is replaced (U+FFFD), texts are tokenized with SentencePiece and
cut to the model's `max_length` tokens (end token included), decoded by cached beam search, and
detokenized. An empty (or all-blank) input gives an empty translation with score 0.
"""

import tensorflow as tf

from tfx_transformer.compiling import tf_function
from tfx_transformer.decoding import (
    DEFAULT_MAX_LENGTH_FACTOR,
    beam_search_nbest,
    score_targets,
    translate_ids,
)
from tfx_transformer.tasks.serving import WARMUP_TEXTS, ServingModule, info_path, repair_utf8
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID


class TranslationServingModule(ServingModule):
    """The serving graph: a tf.Module holding the model, the tokenizer and the decode settings."""

    info_path = info_path("translation")

    def __init__(self, model, tokenizer, beam_size=4, length_penalty=0.6, max_length=None,
                 jit_compile=False, max_length_factor=DEFAULT_MAX_LENGTH_FACTOR):
        super().__init__(model, name="translator")
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"`beam_size` must be a positive integer. Received: {beam_size!r}")
        config = model.model_config
        self.tokenizer = tokenizer.tf_tokenizer()
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.max_input_length = config.max_length
        self.max_output_length = int(max_length or config.max_length)
        self.max_length_factor = max_length_factor
        if not 0 < self.max_output_length <= config.max_length:
            raise ValueError(
                f"`max_length` must be in [1, {config.max_length}] for this model. "
                f"Received: {max_length!r}"
            )
        self.info = {
            "beam_size": beam_size,
            "signatures": list(self.signatures()),
            "length_penalty": self.length_penalty,
            "max_input_tokens": self.max_input_length,
            "max_output_tokens": self.max_output_length,
            "max_length_factor": max_length_factor,
            "vocab_size": config.vocab_size,
            "model": config.to_dict(),
        }
        # Strings never enter the numeric part, so it alone may be XLA-compiled.
        self._decode_ids = tf_function(
            self._decode, input_signature=[tf.TensorSpec([None, None], tf.int32)],
            jit_compile=jit_compile,
        )

    @property
    def text_layer(self):
        return self.tokenizer

    def signatures(self):
        text = tf.TensorSpec([None], tf.string, name="text")
        return {
            "serving_default": self.serve,
            "nbest": tf_function(self._nbest, input_signature=[text]),
            "score": tf_function(
                self._score, input_signature=[text, tf.TensorSpec([None], tf.string, name="translation")]
            ),
        }

    def warmup_requests(self):
        requests = super().warmup_requests()
        requests += [("nbest", {"text": texts}) for texts in WARMUP_TEXTS]
        requests += [("score", {"text": texts, "translation": texts}) for texts in WARMUP_TEXTS]
        return requests

    def _decode(self, source_ids):
        return translate_ids(
            self.model, source_ids, self.beam_size, self.length_penalty, self.max_output_length,
            self.max_length_factor,
        )

    def _serve(self, text):
        empty = is_blank(text)
        tokens, scores = self._decode_ids(self._ids(text, self.max_input_length))
        return {
            "translation": tf.where(empty, tf.constant("", tf.string), self._words(tokens)),
            "score": tf.where(empty, tf.zeros_like(scores), scores),
        }

    def _nbest(self, text):
        empty = tf.expand_dims(is_blank(text), 1)  # (B, 1)
        tokens, scores = beam_search_nbest(
            self.model, self._ids(text, self.max_input_length), self.beam_size,
            length_penalty=self.length_penalty, max_length=self.max_output_length,
            max_length_factor=self.max_length_factor,
        )  # (B, K, L), (B, K)
        shape = tf.shape(tokens)
        words = tf.reshape(self._words(tf.reshape(tokens, [shape[0] * shape[1], shape[2]])), shape[:2])
        return {
            "translations": tf.where(empty, tf.constant("", tf.string), words),
            "scores": tf.where(empty, tf.zeros_like(scores), scores),
        }

    def _score(self, text, translation):
        target = self._ids(translation, self.max_output_length)
        token_scores, totals = score_targets(self.model, self._ids(text, self.max_input_length), target)
        return {
            "score": totals,
            "token_scores": token_scores,
            "length": tf.reduce_sum(tf.cast(target != PAD_ID, tf.int32), axis=1),
        }

    def _ids(self, text, limit):
        """Strings -> [B, S] int32 ids with the end token, cut to `limit` tokens, 0-padded."""
        pieces = self.tokenizer.tokenize(repair_utf8(text))  # ragged [B, (n)]
        pieces = tf.cast(pieces[:, : limit - 1], tf.int32)
        end = tf.fill([tf.shape(text)[0], 1], END_ID)
        return tf.concat([pieces, tf.RaggedTensor.from_tensor(end)], axis=1).to_tensor(PAD_ID)

    def _words(self, tokens):
        """[N, L] decoded ids -> [N] strings: what precedes the first end token, padding and
        the start token left out."""
        before_end = tf.equal(tf.math.cumsum(tf.cast(tf.equal(tokens, END_ID), tf.int32), axis=1), 0)
        keep = tf.logical_and(before_end, tf.logical_and(tokens != PAD_ID, tokens != START_ID))
        return self.tokenizer.detokenize(tf.ragged.boolean_mask(tokens, keep))


def is_blank(text):
    return tf.equal(tf.strings.length(tf.strings.strip(text)), 0)
