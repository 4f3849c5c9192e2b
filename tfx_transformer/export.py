"""SavedModel export for TF Serving: raw text in, translation (or tags) out.

`serving_default` takes `text`: tf.string [None] and returns `translation`: tf.string [None] and
`score`: float32 [None] (the beam's log-probability over the GNMT length penalty). Inside the
graph: invalid UTF-8 is replaced (U+FFFD), the text is tokenized with SentencePiece, cut to the
model's `max_length` tokens (end token included), decoded by cached beam search, and
detokenized. An empty (or all-blank) input gives an empty translation with score 0.

The export loads in a process that imports only `tensorflow` and `tensorflow_text`, which is
what TF Serving 2.20+ (linking the tf-text ops) does. Versions are written into a temporary
folder and renamed into place; an existing version is never overwritten.

A tagging run (`--task tagging`) exports a `Tagger` instead: `serving_default` takes `text`
[None] and returns `tokens` [None, W] (the text split on whitespace), `tags` [None, W] (one per
token; "" past each text's end, and past `max_length` tokens for a model with learned positions)
and `length` int32 [None] (the tagged tokens per text).

    python -m tfx_transformer.export --run runs/default [--beam-size 4] [--length-penalty 0.6]
"""

import argparse
import json
import os
import sys

import tensorflow as tf

from tfx_transformer.decoding import translate_ids
from tfx_transformer.files import atomic_directory
from tfx_transformer.text import END_ID, PAD_ID, START_ID

# Decode settings chosen at export time, beside the graph (TF Serving ignores assets.extra/
# except for warm-up requests).
INFO_PATH = os.path.join("assets.extra", "translation.json")
TAGGING_INFO_PATH = os.path.join("assets.extra", "tagging.json")


def repair_utf8(text):
    """Invalid UTF-8 becomes U+FFFD instead of failing the whole batch."""
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


class Translator(tf.Module):
    """The serving graph: a tf.Module holding the model, the tokenizer and the decode settings."""

    info_path = INFO_PATH

    def __init__(self, model, tokenizer, beam_size=4, length_penalty=0.6, max_length=None,
                 jit_compile=False):
        super().__init__(name="translator")
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"`beam_size` must be a positive integer. Received: {beam_size!r}")
        config = model.model_config
        self.model = model
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
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )

    @property
    def text_layer(self):
        """The layer that turns text into ids, exported beside the model."""
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


class Tagger(tf.Module):
    """The serving graph of a `TransformerTagger`: whitespace tokens -> word ids -> tags."""

    info_path = TAGGING_INFO_PATH

    def __init__(self, model, vocabulary):
        super().__init__(name="tagger")
        import keras

        if model.num_tags != vocabulary.num_tags:
            raise ValueError(
                f"The model predicts {model.num_tags} tags but the vocabulary has {vocabulary.num_tags}."
            )
        self.model = model
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
        self._tag_ids = tf.function(
            self.model.predict_tags, input_signature=[tf.TensorSpec([None, None], tf.int32)]
        )
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )

    @property
    def text_layer(self):
        """The layer that turns text into ids, exported beside the model."""
        return self.lookup

    def _serve(self, text):
        tokens = tf.strings.split(repair_utf8(text)).to_tensor("")  # (B, W)
        width = tf.shape(tokens)[1]
        kept = tokens if self.max_length is None else tokens[:, : self.max_length]
        ids = tf.cast(self.lookup(kept), tf.int32)
        # Only the padding of the dense batch is padding: a text's own "<pad>" is an unknown word.
        ids = tf.where(kept == "", 0, tf.where(ids == 0, 1, ids))
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


def next_version(export_root):
    """1 for a new folder, else one more than the highest numbered version in it."""
    versions = []
    if os.path.isdir(export_root):
        versions = [int(name) for name in os.listdir(export_root) if name.isdigit()]
    return max(versions, default=0) + 1


def export_module(module, export_root):
    """Writes `module` (a Translator or Tagger) as `export_root/<next version>/`; returns it.

    Written with `keras.export.ExportArchive`, which records every variable in the SavedModel's
    object graph: TF Serving's loader (like `saved_model_cli run`) restores variables from there
    and fails on a plain `tf.saved_model.save` of a module that merely holds a Keras 3 model.
    """
    import keras

    path = os.path.join(export_root, str(next_version(export_root)))
    with atomic_directory(path) as temporary:
        archive = keras.export.ExportArchive()
        archive.track(module.model)
        archive.track(module.text_layer)
        archive.add_endpoint("serving_default", module.serve)
        archive.write_out(temporary, verbose=False)
        os.makedirs(os.path.join(temporary, "assets.extra"))
        with open(os.path.join(temporary, module.info_path), "w", encoding="utf-8") as f:
            json.dump(module.info, f, indent=2, sort_keys=True)
    return path


def export_run(run_dir, model=None, tokenizer=None, beam_size=4, length_penalty=0.6,
               max_length=None, jit_compile=False):
    """Exports the model of a training run to `run_dir/export/<next version>/`: a Translator, or
    a Tagger when the run trained a `TransformerTagger` (then `tokenizer` is its vocabulary and
    the decode settings do not apply)."""
    import keras

    import tfx_transformer  # noqa: F401  (registers the classes model.keras needs)
    from tfx_transformer.model import Transformer
    from tfx_transformer.tagger import TransformerTagger
    from tfx_transformer.tagging_data import TagVocabulary
    from tfx_transformer.text import Tokenizer

    if model is None:
        model_path = os.path.join(run_dir, "model.keras")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{model_path} does not exist: train first (python train.py).")
        model = keras.models.load_model(model_path)
    export_root = os.path.join(run_dir, "export")
    if not isinstance(model, (Transformer, TransformerTagger)):
        raise ValueError(
            f"{type(model).__name__} has no serving export; export a translation or tagging run."
        )
    if isinstance(model, TransformerTagger):
        vocabulary = tokenizer or TagVocabulary.load(os.path.join(run_dir, "tokenizer"))
        return export_module(Tagger(model, vocabulary), export_root)
    if tokenizer is None:
        tokenizer = Tokenizer.load(os.path.join(run_dir, "tokenizer"))
    translator = Translator(model, tokenizer, beam_size, length_penalty, max_length, jit_compile)
    return export_module(translator, export_root)


def read_export_info(version_dir):
    """The settings an export was written with (translation.json or tagging.json)."""
    for info_path in (INFO_PATH, TAGGING_INFO_PATH):
        path = os.path.join(version_dir, info_path)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    raise FileNotFoundError(f"{version_dir} has no {INFO_PATH} or {TAGGING_INFO_PATH}.")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfx_transformer.export",
        description="Export a training run as a SavedModel for TF Serving: RUN/export/<version>/.",
    )
    parser.add_argument("--run", required=True, help="the training run's --output folder")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--max-length", type=int, help="longest translation in tokens")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the decode loop")
    args = parser.parse_args(argv)
    try:
        path = export_run(
            args.run,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            max_length=args.max_length,
            jit_compile=args.jit_compile,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
