"""`Translator`: a trained translation model and its tokenizer, translating lists of strings.

Inputs are tokenized, sorted by length into batches (the results come back in the input order),
decoded by a compiled function (tf.function on TensorFlow, which traces once per mode; jax.jit
on JAX, over widths rounded up to a multiple of 16 and rows up to a power of two, so that it
compiles a bounded number of times) and detokenized. Modes: the best translation (greedy for beam size 1,
beam search above), the n best, a sample, and the score of given translations. A translation
ends at `max_length` tokens and at `max_length_factor` times its source's tokens (default 3,
as Marian's; None: at `max_length` only).
"""

import keras
import numpy as np

from tfx_transformer import decoding
from tfx_transformer.compiling import WeightsAsArguments, compile_for_backend, pad_batch, reused
from tfx_transformer.data import Tokenizer
from tfx_transformer.runs import RunPaths
from tfx_transformer.tokens import END_ID

LONG_INPUTS = ("truncate", "refuse")


class InputTooLong(ValueError):
    """An input over the model's length with long_inputs="refuse"; `index` is its position."""

    def __init__(self, index, tokens, limit):
        super().__init__(f"input {index + 1} has {tokens} tokens; the model takes at most {limit}.")
        self.index = index


class Translator:
    def __init__(self, model, tokenizer, beam_size=4, length_penalty=0.6, max_length=None,
                 batch_size=64, long_inputs="truncate",
                 max_length_factor=decoding.DEFAULT_MAX_LENGTH_FACTOR):
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"`beam_size` must be a positive integer. Received: {beam_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: {batch_size!r}")
        if long_inputs not in LONG_INPUTS:
            raise ValueError(f"`long_inputs` must be one of {LONG_INPUTS}. Received: {long_inputs!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.max_input_length = model.model_config.max_length
        self.max_length = int(max_length or model.model_config.max_length)
        self.max_length_factor = max_length_factor
        self.batch_size = batch_size
        self.long_inputs = long_inputs
        self._compiled = {}

    @classmethod
    def from_run(cls, run_dir, **settings):
        """The translator of a training run's folder (model.keras and tokenizer/)."""
        paths = RunPaths(run_dir)
        task = paths.task_name()
        if task != "translation":
            raise ValueError(f"{run_dir} is a --task {task} run; a Translator needs a translation run.")
        return cls(paths.trained_model(), Tokenizer.load(paths.tokenizer), **settings)

    # Modes ------------------------------------------------------------------------------------

    def translate(self, texts):
        """The best translation of each text."""
        return [text for text, _ in self.translate_with_scores(texts)]

    def translate_with_scores(self, texts):
        """(translation, score) per text; the score is beam search's length-normalized one (for
        beam size 1, the summed log-probability)."""
        return self._run(texts, self._best(), self._one_per_row)

    def lower_translation(self, texts, value_of):
        """On JAX, the lowered decoding (see `compiling.WeightsAsArguments.lower`) of each input
        shape `translate(texts)` will meet, in the order it meets them, for the weights
        `value_of(variable)`: their `.compile()` started ahead is what `translate` then finds.
        Nothing elsewhere (tf.function traces as it goes)."""
        decode = self._best()
        if not isinstance(decode, WeightsAsArguments):
            return []
        return decode.lower_new(value_of, (source.shape for _, source in self._batches(self._encode(texts))))

    def _best(self):
        return self._function(("best",), lambda ids: decoding.translate_ids(
            self.model, ids, self.beam_size, self.length_penalty, self.max_length,
            self.max_length_factor,
        ))

    def nbest(self, texts, num_hypotheses):
        """The `num_hypotheses` best (translation, score) pairs of each text, best first."""
        beam_size = max(self.beam_size, num_hypotheses)
        decode = self._function(("nbest", num_hypotheses), lambda ids: decoding.beam_search_nbest(
            self.model, ids, num_hypotheses, beam_size, self.length_penalty, self.max_length,
            max_length_factor=self.max_length_factor,
        ))
        return self._run(texts, decode, self._n_per_row)

    def sample(self, texts, temperature=1.0, top_k=0, top_p=1.0, seed=0):
        """A sampled (translation, summed log-probability) per text (see `decoding.sample_decode`;
        a text's sample depends on the seed and on its place in its batch)."""
        key = ("sample", float(temperature), top_k, float(top_p), seed)
        decode = self._function(key, lambda ids: decoding.sample_decode(
            self.model, ids, temperature, top_k, top_p, seed, self.max_length,
            max_length_factor=self.max_length_factor,
        ))
        return self._run(texts, decode, self._one_per_row)

    def score(self, sources, targets):
        """(total, per-token log-probabilities) of each target given its source; the end token
        is scored too."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources for {len(targets)} targets.")
        decode = self._function(("score",), lambda ids, target_ids: decoding.score_targets(
            self.model, ids, target_ids
        ), inputs=2)
        target_ids = self._encode(targets)
        results = [None] * len(sources)
        for chunk, source in self._batches(self._encode(sources)):
            target = pad_batch([target_ids[i] for i in chunk], self.batch_size, self.max_input_length)
            per_token, totals = decode(source, target)
            per_token, totals = keras.ops.convert_to_numpy(per_token), keras.ops.convert_to_numpy(totals)
            for row, i in enumerate(chunk):
                results[i] = (float(totals[row]), per_token[row, : len(target_ids[i])].tolist())
        return results

    # Batching ---------------------------------------------------------------------------------

    def too_long(self, texts):
        """[(index, tokens with the end token)] of the `texts` over the model's length: what
        translating them cuts (or, with long_inputs="refuse", refuses)."""
        return [(index, len(ids) + 1) for index, ids in enumerate(self.tokenizer.encode(texts))
                if self._over_length(ids)]

    def _over_length(self, ids):
        return len(ids) + 1 > self.max_input_length

    def _encode(self, texts):
        """Token ids with the end token, cut to the model's length (or refused)."""
        encoded = []
        for index, ids in enumerate(self.tokenizer.encode(texts)):
            if self._over_length(ids):
                if self.long_inputs == "refuse":
                    raise InputTooLong(index, len(ids) + 1, self.max_input_length)
                ids = ids[: self.max_input_length - 1]
            encoded.append(ids + [END_ID])
        return encoded

    def _batches(self, encoded):
        """(indices, padded int32 ids) of batches of similar length."""
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size].tolist()
            yield chunk, pad_batch([encoded[i] for i in chunk], self.batch_size, self.max_input_length)

    def _run(self, texts, decode, unpack):
        texts = list(texts)
        results = [None] * len(texts)
        for chunk, source in self._batches(self._encode(texts)):
            tokens, scores = decode(source)
            tokens, scores = keras.ops.convert_to_numpy(tokens), keras.ops.convert_to_numpy(scores)
            for row, i in enumerate(chunk):
                results[i] = unpack(tokens[row], scores[row])
        return results

    def _one_per_row(self, tokens, score):
        return self.tokenizer.decode([tokens])[0], float(score)

    def _n_per_row(self, tokens, scores):
        return list(zip(self.tokenizer.decode(tokens), scores.astype(float).tolist()))

    def _function(self, key, function, inputs=1):
        """`function` of `inputs` id tensors, compiled for this backend once per mode and settings."""
        return reused(self._compiled, key, lambda: compile_for_backend(function, inputs, self.model))

