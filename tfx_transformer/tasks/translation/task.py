"""`--task translation`: parallel text, a SentencePiece tokenizer, the encoder-decoder
`Transformer`, BLEU / chrF / exact match, and the translation export."""

import numpy as np

from tfx_transformer.data import BatchShapes, DataError, split_off
from tfx_transformer.models import Transformer
from tfx_transformer.reporting import attention_image, log, markdown_table
from tfx_transformer.tasks.base import SentencePieceTask
from tfx_transformer.tasks.translation import data as data_lib
from tfx_transformer.tasks.translation.metrics import score_translations
from tfx_transformer.tasks.translation.translator import Translator


class TranslationTask(SentencePieceTask):
    name = "translation"
    default_data = "builtin:numbers"
    data_specs = "builtin:numbers[:en-fr], tsv:PATH, parallel:SRC,TGT or tfds:NAME"
    default_epochs = 6
    batch_arity = 3  # (source, decoder input, labels)
    serving_class = "tfx_transformer.tasks.translation.serving.TranslationServingModule"

    def __init__(self, options, paths):
        super().__init__(options, paths)
        self.translations = []
        self._translator = None

    # Data and vocabulary ----------------------------------------------------------------------

    def prepare(self):
        options = self.options
        self.train_text, self.valid_text, self.test_text = self.load_splits(
            data_lib.load_spec,
            lambda train: split_off(train, options.eval_examples, options.seed),
        )
        self.vocabulary = self.tokenizer_for(self.train_text.sources + self.train_text.targets)
        model_config = self.model_config(self.vocabulary.vocab_size)
        self.max_length = max_length = model_config.max_length
        self.train_encoded = data_lib.encode_pairs(
            self.vocabulary, self.train_text, max_length, options.long_pairs
        )
        self.valid_encoded = data_lib.encode_pairs(self.vocabulary, self.valid_text, max_length, "truncate")
        if not self.train_encoded.sources:
            raise DataError(
                f"{self.train_text.origin}: every pair is longer than {max_length} tokens."
            )
        log(self.describe("train", self.train_text, self.train_encoded))
        self.warn_if_mostly_dropped(
            len(self.train_encoded.sources), self.train_encoded.dropped, "pair", max_length
        )
        log(self.describe("validation", self.valid_text))
        if self.test_text is not None:
            log(self.describe("test", self.test_text))
        count = options.eval_examples
        self.eval_texts = (self.valid_text.sources[:count], self.valid_text.targets[:count])
        return model_config

    @staticmethod
    def describe(name, data, encoded=None):
        parts = [f"{name}: {len(data)} pairs from {data.origin}"]
        if data.skipped_empty:
            parts.append(f"{data.skipped_empty} empty pairs skipped")
        if encoded is not None and encoded.dropped:
            parts.append(f"{encoded.dropped} over-long pairs dropped")
        if encoded is not None and encoded.truncated:
            parts.append(f"{encoded.truncated} over-long pairs truncated")
        return "; ".join(parts)

    @property
    def train_examples(self):
        return len(self.train_encoded.sources)

    def train_batches(self, seed, shapes=BatchShapes()):
        return data_lib.make_batches(
            self.train_encoded, self.options.batch_tokens, self.max_length, seed, shapes
        )

    def valid_batches(self, shapes=BatchShapes()):
        return data_lib.make_batches(
            self.valid_encoded, self.options.batch_tokens, self.max_length, shapes=shapes
        )[0]

    # The model --------------------------------------------------------------------------------

    def build_model(self, model_config):
        return Transformer(model_config)

    def model_inputs(self, features):
        source, decoder_in = features
        return {"source_ids": source, "target_ids": decoder_in}

    # Evaluation -------------------------------------------------------------------------------

    def _translate(self, model, texts):
        if self._translator is None:
            self._translator = Translator(
                model, self.vocabulary, self.options.beam_size, self.options.length_penalty
            )
        return self._translator.translate(texts)

    def evaluate(self, model):
        self.translations = self._translate(model, self.eval_texts[0])
        return score_translations(self.translations, self.eval_texts[1])

    def write_summaries(self, model, valid_batches, writer, step):
        count = self.options.samples
        sources, references = (texts[:count] for texts in self.eval_texts)
        writer.text(
            "samples",
            markdown_table(
                ["source", "reference", "translation"],
                zip(sources, references, self.translations[:count]),
            ),
            step,
        )
        source, decoder_in, _ = valid_batches[0]
        maps = model.attention_maps({"source_ids": source[:1], "target_ids": decoder_in[:1]})
        cross = np.asarray(maps["decoder_cross"][-1])[0].mean(axis=0)  # (T, S), heads averaged
        writer.image("cross_attention", attention_image(cross), step)

    def describe_metrics(self, metrics):
        return (
            f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}, "
            f"exact match {metrics['exact_match']:.2%}"
        )

    def test_metrics(self, model):
        if self.test_text is None:
            return {}
        translations = self._translate(model, self.test_text.sources)
        scores = score_translations(translations, self.test_text.targets)
        return {**{f"test_{k}": v for k, v in scores.items()}, "test_pairs": len(self.test_text)}

    def export_settings(self):
        return {"beam_size": self.options.beam_size, "length_penalty": self.options.length_penalty}

    def report(self, results):
        log("\nsample translations:")
        samples = list(zip(*self.eval_texts, self.translations))[: self.options.samples]
        for source, reference, translation in samples:
            mark = "ok" if translation.strip() == reference.strip() else "xx"
            log(f"  [{mark}] {source}\n       -> {translation}\n       (reference: {reference})")
        summary = (
            f"validation BLEU {results['bleu']:.2f}, chrF {results['chrf']:.2f}, exact match "
            f"{results['exact_match']:.2%}"
        )
        if "test_exact_match" in results:
            summary += (
                f"; test exact match {results['test_exact_match']:.2%} ({results['test_pairs']} pairs)"
            )
        return summary
