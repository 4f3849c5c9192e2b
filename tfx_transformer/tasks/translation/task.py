"""`--task translation`: parallel text, a SentencePiece tokenizer, the encoder-decoder
`Transformer`, BLEU / chrF / exact match, and the translation export."""

import numpy as np

from tfx_transformer.data import BatchShapes, DataError, Tokenizer, split_off
from tfx_transformer.models import Transformer
from tfx_transformer.reporting import attention_image, log, markdown_table
from tfx_transformer.tasks.base import SentencePieceTask
from tfx_transformer.tasks.translation import data as data_lib
from tfx_transformer.tasks.translation.algorithmic import exact_match_by_band
from tfx_transformer.tasks.translation.metrics import bleu_metric, bleu_tokenizer, score_translations
from tfx_transformer.tasks.translation.streamed import PreparedCorpus, is_prepared
from tfx_transformer.tasks.translation.translator import Translator


class TranslationTask(SentencePieceTask):
    name = "translation"
    packs = True
    default_data = "builtin:numbers"
    data_specs = (
        "builtin:numbers[:en-fr], builtin:algorithmic:copy|reverse|addition (tested on longer "
        "inputs than trained on), tsv:PATH, parallel:SRC,TGT, tfds:NAME, or prepared:DIR (a "
        "corpus of any size encoded by python -m tfx_transformer.prepare, streamed from its "
        "shards)"
    )
    default_epochs = 6
    batch_arity = 3  # (source, decoder input, labels)
    serving_class = "tfx_transformer.tasks.translation.serving.TranslationServingModule"
    selection_metric = ("bleu", "max")
    shown_attributes = ("shown",)

    def __init__(self, options, paths):
        super().__init__(options, paths)
        self._translators = {}

    # Data and vocabulary ----------------------------------------------------------------------

    def prepare(self):
        options = self.options
        # A prepared corpus (python -m tfx_transformer.prepare) streams from its shards; any
        # other spec is read whole.
        self.corpus = PreparedCorpus(options.data) if is_prepared(options.data) else None
        self.train_text, self.valid_text, self.test_text = self.read_splits()
        for name, split in (("training", self.train_text), ("validation", self.valid_text),
                            ("test", self.test_text)):
            self.check_alignment(name, split)
        self.vocabulary = self.choose_tokenizer()
        model_config = self.model_config(self.vocabulary.vocab_size)
        self.max_length = max_length = model_config.max_length
        self.d_model = model_config.d_model  # what packed rows' width is chosen for
        if self.corpus is None:
            self.encode_training_text()
        else:
            self.describe_corpus()
        self.valid_encoded = data_lib.encode_pairs(self.vocabulary, self.valid_text, max_length, "truncate")
        log(self.describe("validation", self.valid_text))
        if self.test_text is not None:
            log(self.describe("test", self.test_text))
        if self.train_text is not None and self.train_text.bands is not None:
            # Symbol tasks (builtin:algorithmic) have outputs of one or two tokens, where BLEU's
            # 4-grams say nothing: an output is right or wrong.
            self.selection_metric = ("exact_match", "max")
        self.bleu_tokenize = self.choose_bleu_tokenizer()
        self.eval_texts = sample_pairs(self.valid_text, options.eval_examples, options.seed)
        self.shown = self.eval_texts + ([],)  # (sources, references, translations) to show
        return model_config

    def choose_bleu_tokenizer(self):
        """--bleu-tokenize, or with auto the one for the validation references' script."""
        chosen = self.options.bleu_tokenize
        if chosen == "auto":
            chosen = bleu_tokenizer(self.valid_text.targets)
            if chosen != "13a":
                log(f"BLEU: sacrebleu's {chosen!r} tokenizer, for the script of the validation "
                    "references (--bleu-tokenize)")
            return chosen
        try:
            bleu_metric(chosen)
        except ValueError as error:
            raise ValueError(f"--bleu-tokenize: {error}") from None
        return chosen

    def read_splits(self):
        """(train, validation, test) text; train is None for a prepared corpus, whose validation
        pairs are those it held out unless --valid-data says otherwise."""
        options = self.options

        def load(spec, split, seed=options.seed):
            return data_lib.load_spec(spec, split, seed, options.allow_misaligned)

        if self.corpus is None:
            return self.load_splits(
                load, lambda train: split_off(train, options.eval_examples, options.seed)
            )
        valid = load(options.valid_data or self.corpus.validation_spec(), "validation")
        test = load(options.test_data, "test") if options.test_data else None
        return None, valid, test

    def choose_tokenizer(self):
        if self.corpus is None:
            return self.tokenizer_for(self.train_text.sources + self.train_text.targets)
        if self.options.resume:
            self.corpus.check_run_tokenizer(Tokenizer.load(self.paths.tokenizer))
        return self.corpus.tokenizer

    def encode_training_text(self):
        max_length = self.max_length
        self.train_encoded = data_lib.encode_pairs(
            self.vocabulary, self.train_text, max_length, self.options.long_pairs
        )
        if not self.train_encoded.sources:
            raise DataError(
                f"{self.train_text.origin}: every pair is longer than {max_length} tokens."
            )
        log(self.describe("train", self.train_text, self.train_encoded))
        self.warn_if_mostly_dropped(
            len(self.train_encoded.sources), self.train_encoded.dropped, "pair", max_length
        )

    def describe_corpus(self):
        manifest, options = self.corpus.manifest, self.options
        kept = self.corpus.kept_examples(self.max_length, options.long_pairs)
        if kept == 0:
            raise DataError(f"{self.corpus.origin}: every pair is longer than {self.max_length} tokens.")
        over = manifest["examples"] - kept
        what = "dropped" if options.long_pairs == "drop" else "truncated"
        log(f"train: {manifest['examples']} pairs streamed from {self.corpus.origin}, "
            f"{len(manifest['shards'])} shard(s), windows of {options.stream_window} pairs"
            + (f"; {over} over-long pairs {what}" if over else ""))
        if options.long_pairs == "drop":
            self.warn_if_mostly_dropped(kept, over, "pair", self.max_length)

    @property
    def streams(self):
        return self.corpus is not None

    def data_statistics(self):
        """The sacrebleu tokenizer that BLEU counted with; with several JAX processes streaming
        a prepared corpus, the batches this process made and those the workers' shape agreement
        left out (`data.shards.ShapeAgreement`)."""
        statistics = {"bleu_tokenize": self.bleu_tokenize}
        agreement = getattr(getattr(self.corpus, "stream", None), "agreement", None)
        if agreement is None or not agreement.made:
            return statistics
        share = agreement.dropped / agreement.made
        log(f"shape agreement: {agreement.dropped} of the {agreement.made} batches this process "
            f"made were left out ({share:.2%}) so that every process's batch had one shape")
        return {**statistics, "stream_batches_made": agreement.made,
                "stream_batches_left_out": agreement.dropped}

    def check_alignment(self, name, split):
        """Refuses text whose sides look shifted against each other (see `data.alignment`),
        unless --allow-misaligned says to go on."""
        if split is None or split.misalignment is None:
            return
        if not self.options.allow_misaligned:
            raise DataError(
                f"{name} data: {split.misalignment}. Fix the files, or pass --allow-misaligned "
                "to train on them as they are."
            )
        log(f"warning: {name} data: {split.misalignment}; training anyway (--allow-misaligned).")

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
        if self.corpus is not None:
            return self.corpus.kept_examples(self.max_length, self.options.long_pairs)
        return len(self.train_encoded.sources)

    def train_batches(self, epoch, shapes=BatchShapes()):
        if self.corpus is not None:
            if self.corpus.stream is None:
                self.corpus.open_stream(self.options, self.max_length, shapes, self.worker,
                                        self.workers, self.paths.checkpoints, self.gather)
            return self.corpus.epoch(epoch, self.options, self.max_length, shapes, self.workers)
        width = self.run_packed_width(shapes, lambda: data_lib.pair_lengths(self.train_encoded))
        return data_lib.make_batches(
            self.train_encoded, self.options.batch_tokens, self.max_length,
            self.options.seed + epoch, shapes, width
        )

    def packing_refusal(self, model_config):
        if self.corpus is not None:
            return ("a prepared corpus (--data prepared:DIR) streams its batches unpacked; train "
                    "on it with --no-packing.")
        return super().packing_refusal(model_config)

    def valid_batches(self, shapes=BatchShapes()):
        return data_lib.make_batches(
            self.valid_encoded, self.options.batch_tokens, self.max_length, shapes=shapes
        )[0]

    # The model --------------------------------------------------------------------------------

    def build_model(self, model_config):
        return Transformer(model_config)

    def model_inputs(self, features):
        if len(features) == 4:  # packed rows (`data.pack_batches`)
            source, decoder_in, source_segments, target_segments = features
            return {"source_ids": source, "target_ids": decoder_in,
                    "source_segment_ids": source_segments, "target_segment_ids": target_segments}
        source, decoder_in = features
        return {"source_ids": source, "target_ids": decoder_in}

    # Evaluation -------------------------------------------------------------------------------

    def _translator(self, model, beam_size):
        if beam_size not in self._translators:
            self._translators[beam_size] = Translator(
                model, self.vocabulary, beam_size, self.options.length_penalty
            )
        return self._translators[beam_size]

    def _translate(self, model, texts, beam_size):
        return self._translator(model, beam_size).translate(texts)

    def lower_evaluation(self, model, value_of, final=False):
        if not final:
            return self._translator(model, 1).lower_translation(self.eval_texts[0], value_of)
        sources = list(self.valid_text.sources)
        if self.test_text is not None:
            sources += list(self.test_text.sources)
        return self._translator(model, self.options.beam_size).lower_translation(sources, value_of)

    def evaluate(self, model, final=False):
        """During training, greedy decoding of the --eval-examples sample (cheap, and enough to
        follow progress and pick the best weights); at the end, the whole validation set with
        the run's beam."""
        if final:
            sources, references = self.valid_text.sources, self.valid_text.targets
            translations = self._translate(model, sources, self.options.beam_size)
        else:
            sources, references = self.eval_texts
            translations = self._translate(model, sources, 1)
        self.shown = (sources, references, translations)
        return score_translations(translations, references, self.bleu_tokenize)

    def final_evaluation_cost(self):
        sample = max(len(self.eval_texts[0]), 1)
        beam = beam_cost(self.options.beam_size)
        test = len(self.test_text) if self.test_text is not None else 0
        return beam * len(self.valid_text) / sample, beam * test / sample

    def write_summaries(self, model, valid_batches, writer, step):
        count = self.options.samples
        writer.text(
            "samples",
            markdown_table(
                ["source", "reference", "translation"],
                zip(*(column[:count] for column in self.shown)),
            ),
            step,
        )
        source, decoder_in, _ = valid_batches[0]
        maps = model.attention_maps({"source_ids": source[:1], "target_ids": decoder_in[:1]})
        cross = np.asarray(maps["decoder_cross"][-1])[0].mean(axis=0)  # (T, S), heads averaged
        writer.image("cross_attention", attention_image(cross), step)
        if model.model_config.adaptive_computation:
            write_ponder_summaries(model, valid_batches[0], writer, step)

    def describe_metrics(self, metrics):
        return describe_scores(metrics)

    def test_metrics(self, model):
        if self.test_text is None:
            return {}
        translations = self._translate(model, self.test_text.sources, self.options.beam_size)
        scores = score_translations(translations, self.test_text.targets, self.bleu_tokenize)
        results = {**{f"test_{k}": v for k, v in scores.items()}, "test_pairs": len(self.test_text)}
        if self.test_text.bands is not None:
            results["test_exact_match_by_length"] = exact_match_by_band(
                translations, self.test_text.targets, self.test_text.bands
            )
        return results

    def export_settings(self):
        return {"beam_size": self.options.beam_size, "length_penalty": self.options.length_penalty}

    def report(self, results):
        log("\nsample translations (validation):")
        sources, references, translations = self.shown
        for source, reference, translation in list(zip(sources, references, translations))[: self.options.samples]:
            mark = "ok" if translation.strip() == reference.strip() else "xx"
            log(f"  [{mark}] source:      {source}\n"
                f"       translation: {translation}\n"
                f"       reference:   {reference}")
        summary = f"validation {describe_scores(results)}"
        if "test_bleu" in results:
            test = {key[len("test_"):]: value for key, value in results.items() if key.startswith("test_")}
            summary += f"; test {describe_scores(test)} ({results['test_pairs']} pairs)"
        if "test_exact_match_by_length" in results:
            summary += "; test exact match by input length: " + ", ".join(
                f"{band} {share:.2%}" for band, share in results["test_exact_match_by_length"].items()
            )
        return summary


def write_ponder_summaries(model, batch, writer, step):
    """ACT's steps per real position on one validation batch: their mean and histogram, for the
    encoder (per source token) and the decoder (per target token, teacher-forced)."""
    source, decoder_in, _ = batch
    steps = model.ponder_steps({"source_ids": source, "target_ids": decoder_in})
    for side, ids in (("encoder", source), ("decoder", decoder_in)):
        real = np.asarray(steps[side])[np.asarray(ids) != 0]
        writer.scalar(f"ponder/{side}_mean_steps", real.mean(), step)
        writer.histogram(f"ponder/{side}_steps", real, step)


def describe_scores(scores):
    """BLEU, chrF, length ratio and exact match in a few words."""
    return (
        f"BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, length ratio "
        f"{scores['length_ratio']:.3f}, exact match {scores['exact_match']:.2%}"
    )


def beam_cost(beam_size):
    """Time to decode with `beam_size` beams over greedy decoding's, as measured on a CPU (beam 4
    took 2.2-2.3x greedy's time, README "Decoding")."""
    return 1.0 + 0.45 * (beam_size - 1)


def sample_pairs(pairs, count, seed):
    """(sources, targets) of `count` pairs drawn at random (all when there are fewer), in corpus
    order: a corpus in some order (by length, by topic) is sampled evenly."""
    if count >= len(pairs):
        return list(pairs.sources), list(pairs.targets)
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
    return [pairs.sources[i] for i in chosen], [pairs.targets[i] for i in chosen]
