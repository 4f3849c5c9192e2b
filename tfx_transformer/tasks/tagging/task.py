"""`--task tagging`: CoNLL-style or built-in tagged sentences, a word vocabulary, the encoder-only
`TransformerTagger`, entity-level precision / recall / F1, and the tagging export."""

import keras
import numpy as np

from tfx_transformer.compiling import WeightsAsArguments, compile_for_backend, pad_batch, reused
from tfx_transformer.data import BatchShapes, DataError, split_off
from tfx_transformer.models import TransformerTagger
from tfx_transformer.reporting import attention_image, log, markdown_table
from tfx_transformer.tasks.base import Task
from tfx_transformer.tasks.tagging import data as tagging_data
from tfx_transformer.tasks.tagging.metrics import entity_scores
from tfx_transformer.tasks.tagging.vocabulary import TagVocabulary

PREDICT_BATCH_SIZE = 64  # sentences tagged together (sorted by length)


class TaggingTask(Task):
    name = "tagging"
    selection_metric = ("f1", "max")
    shown_attributes = ("predicted",)
    default_data = "builtin:entities"
    data_specs = "builtin:entities or conll:PATH (token and tag per line, blank line between sentences)"
    default_epochs = 20
    batch_arity = 2  # (word ids, tag ids); packed rows add segment ids between them
    packs = True
    serving_class = "tfx_transformer.tasks.tagging.serving.TaggingServingModule"

    def __init__(self, options, paths):
        super().__init__(options, paths)
        self.predicted = []
        self._compiled = {}  # the compiled predictions, kept between evaluations

    # Data and vocabulary ----------------------------------------------------------------------

    def prepare(self):
        options = self.options
        self.train_text, self.valid_text, self.test_text = self.load_splits(
            tagging_data.load_spec,
            lambda train: split_off(train, options.eval_examples, options.seed),
        )
        if options.resume:
            self.vocabulary = TagVocabulary.load(self.paths.tokenizer)
        else:
            self.vocabulary = TagVocabulary.build(
                self.train_text, max_words=options.vocab_size
            )
        model_config = self.model_config(self.vocabulary.vocab_size)
        self.max_length = model_config.max_length
        self.d_model = model_config.d_model  # what packed rows' width is chosen for
        self.train_encoded = tagging_data.encode_tagged(
            self.vocabulary, self.train_text, self.max_length, options.long_pairs
        )
        if not self.train_encoded.words:
            raise DataError(
                f"{self.train_text.origin}: every sentence is longer than {self.max_length} tokens."
            )
        self.valid_encoded = self.encode_for_evaluation(self.valid_text)
        log(self.describe("train", self.train_text, self.train_encoded))
        self.warn_if_mostly_dropped(
            len(self.train_encoded.words), self.train_encoded.dropped, "sentence", self.max_length
        )
        log(self.describe("validation", self.valid_text, self.valid_encoded))
        if self.test_text is not None:
            self.test_encoded = self.encode_for_evaluation(self.test_text)
            log(self.describe("test", self.test_text, self.test_encoded))
        return model_config

    def encode_for_evaluation(self, data):
        """Every sentence kept: the model sees its first max_length tokens, and the tokens past
        them count as tagged O, so that scores are over the whole set."""
        return tagging_data.encode_tagged(self.vocabulary, data, self.max_length, "truncate")

    @staticmethod
    def describe(name, data, encoded):
        parts = [f"{name}: {len(data)} sentences from {data.origin}"]
        if encoded.dropped:
            parts.append(f"{encoded.dropped} over-long sentences dropped")
        if encoded.truncated:
            parts.append(f"{encoded.truncated} over-long sentences truncated")
        return "; ".join(parts)

    def describe_vocabulary(self):
        tags = ", ".join(self.vocabulary.tags[1:])
        return f"vocabulary: {self.vocabulary.vocab_size} words, {self.vocabulary.num_tags - 1} tags ({tags})"

    @staticmethod
    def load_vocabulary(folder):
        return TagVocabulary.load(folder)

    @property
    def train_examples(self):
        return len(self.train_encoded.words)

    def train_batches(self, epoch, shapes=BatchShapes()):
        words = self.train_encoded.words
        width = self.run_packed_width(shapes, lambda: [len(sentence) for sentence in words])
        return tagging_data.make_batches(
            self.train_encoded,
            self.options.batch_tokens,
            self.max_length,
            self.options.seed + epoch,
            shapes,
            word_dropout=self.options.word_dropout,
            packed_width=width,
        )

    def valid_batches(self, shapes=BatchShapes()):
        batches, _ = tagging_data.make_batches(
            self.valid_encoded, self.options.batch_tokens, self.max_length, shapes=shapes
        )
        return batches

    # The model --------------------------------------------------------------------------------

    def build_model(self, model_config):
        return TransformerTagger(model_config, num_tags=self.vocabulary.num_tags)

    def model_inputs(self, features):
        if len(features) == 2:  # packed rows (`tagging_data.make_batches`)
            return {"token_ids": features[0], "segment_ids": features[1]}
        return features[0]

    # Evaluation -------------------------------------------------------------------------------

    def predict(self, model, data, encoded):
        """Tag strings per sentence, one per token of `data` (O past the model's max_length)."""
        predict = self._predictor(model)
        results = [None] * len(encoded.words)
        for chunk, ids in self._batches(encoded):
            tag_ids = keras.ops.convert_to_numpy(predict(ids))
            for row, index in enumerate(chunk):
                results[index] = self.vocabulary.decode_tags(tag_ids[row, : len(encoded.words[index])])
        return [
            tags + ["O"] * (len(sentence) - len(tags)) for tags, sentence in zip(results, data.tokens)
        ]

    def _predictor(self, model):
        return reused(self._compiled, "predict", lambda: compile_for_backend(model.predict_tags, model=model))

    def _batches(self, encoded):
        """(indices, padded word ids) of batches of sentences of similar length."""
        order = np.argsort([len(words) for words in encoded.words], kind="stable")
        for start in range(0, len(order), PREDICT_BATCH_SIZE):
            chunk = order[start : start + PREDICT_BATCH_SIZE].tolist()
            yield chunk, pad_batch(
                [encoded.words[i] for i in chunk], PREDICT_BATCH_SIZE, self.max_length
            )

    def lower_evaluation(self, model, value_of, final=False):
        predict = self._predictor(model)
        if not isinstance(predict, WeightsAsArguments):
            return []
        # The evaluations tag the validation sentences; the end, the test sentences too.
        sets = [self.valid_encoded]
        if final and self.test_text is not None:
            sets.append(self.test_encoded)
        return predict.lower_new(value_of, (ids.shape for data in sets for _, ids in self._batches(data)))

    def evaluate(self, model, final=False):
        self.predicted = self.predict(model, self.valid_text, self.valid_encoded)
        return entity_scores(self.valid_text.tags, self.predicted)

    def write_summaries(self, model, valid_batches, writer, step):
        rows = []
        for tokens, truth, predicted in list(
            zip(self.valid_text.tokens, self.valid_text.tags, self.predicted)
        )[: self.options.samples]:
            rows.append((" ".join(tokens), " ".join(truth), " ".join(predicted)))
        writer.text("samples", markdown_table(["tokens", "reference", "predicted"], rows), step)
        words, _ = valid_batches[0]
        _, weights = model(words[:1], training=False, return_attention_scores=True)
        last = np.asarray(weights[-1])[0].mean(axis=0)  # (S, S), heads averaged
        writer.image("self_attention", attention_image(last), step)

    def describe_metrics(self, metrics):
        return (
            f"entity precision {metrics['precision']:.2%}, recall {metrics['recall']:.2%}, "
            f"F1 {metrics['f1']:.2%}"
        )

    def test_metrics(self, model):
        if self.test_text is None:
            return {}
        predicted = self.predict(model, self.test_text, self.test_encoded)
        scores = entity_scores(self.test_text.tags, predicted)
        return {
            **{f"test_{k}": v for k, v in scores.items()},
            "test_sentences": len(self.test_text),
        }

    @classmethod
    def serving_module(cls, model, vocabulary, **settings):
        return cls.load_serving_class()(model, vocabulary)  # decode settings do not apply to tagging

    def report(self, results):
        log("\nsample taggings:")
        samples = list(zip(self.valid_text.tokens, self.valid_text.tags, self.predicted))
        for tokens, truth, predicted in samples[: self.options.samples]:
            mark = "ok" if truth == predicted else "xx"
            tagged = " ".join(
                f"{token}/{tag}" if tag != "O" else token for token, tag in zip(tokens, predicted)
            )
            log(f"  [{mark}] {tagged}")
        summary = self.describe_metrics(results)
        if "test_f1" in results:
            summary += f"; test entity F1 {results['test_f1']:.2%} ({results['test_sentences']} sentences)"
        return summary
