"""CPU decoding speed against CTranslate2: the same trained model through our SavedModel, our
compiled Python API (`Translator`) and CTranslate2 (float32 and int8), beam 4 and greedy.

    python benchmarks/ctranslate2_speed.py --run runs/default [--texts FILE] [--batch 32]
        [--sentences 1000] [--rounds 3]

"SavedModel, full batch" is the same export with every source kept in the batch until the
last one settles (the static-shape loop JAX runs), to show what dropping settled sources gives.
Sentences are the --texts file's lines (e.g. ../shared/data/multi30k-en-fr's test source) or,
without it, the built-in task's test sentences; batches of --batch sentences in the file's order.
Prints sentences per second (median of --rounds, the variants measured in alternation so that
machine noise hits them alike), the ratio of our SavedModel to CTranslate2 float32, and how
many greedy translations CTranslate2 and ours share.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (the SavedModel's SentencePiece ops)

from common import machine  # noqa: E402

from tfx_transformer import decoding  # noqa: E402
from tfx_transformer.data import Tokenizer  # noqa: E402
from tfx_transformer.export import export_module  # noqa: E402
from tfx_transformer.export.ctranslate2 import export_ctranslate2, load_translator  # noqa: E402
from tfx_transformer.tasks.translation.data import numbers_split  # noqa: E402
from tfx_transformer.tasks.translation.serving import TranslationServingModule  # noqa: E402
from tfx_transformer.tasks.translation.translator import Translator  # noqa: E402


def batches(texts, size):
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def variants(model, tokenizer, texts, batch, beam, folder):
    """{name: function translating every text}, for one beam size."""
    def export(name):
        return tf.saved_model.load(export_module(
            TranslationServingModule(model, tokenizer, beam_size=beam), os.path.join(folder, name)
        )).signatures["serving_default"]

    def saved_model_variant(signature):
        return lambda: [t.decode("utf-8") for chunk in batches(texts, batch)
                        for t in signature(text=tf.constant(chunk))["translation"].numpy()]

    saved = export(f"sm{beam}")
    with mock.patch.object(decoding, "_batch_may_shrink", lambda: False):
        full_batch = export(f"sm{beam}-full")
    python_api = Translator(model, tokenizer, beam_size=beam, batch_size=batch)
    pieces = [[tokenizer.id_to_piece(i) for i in ids] for ids in tokenizer.encode(texts)]
    max_length = model.model_config.max_length

    def ctranslate2_variant(compute_type):
        translator = load_translator(os.path.join(folder, "ct2"), compute_type=compute_type)

        def run():
            results = translator.translate_batch(
                pieces, beam_size=beam, max_batch_size=batch, max_decoding_length=max_length,
                length_penalty=0.6 if beam > 1 else 1.0, suppress_sequences=[["<pad>"], ["<s>"]],
                min_decoding_length=0,
            )
            return [tokenizer._processor.decode_pieces(r.hypotheses[0]) for r in results]

        return run

    return {
        "SavedModel": saved_model_variant(saved),
        "SavedModel, full batch": saved_model_variant(full_batch),
        "Translator": lambda: python_api.translate(texts),
        "CTranslate2 float32": ctranslate2_variant("float32"),
        "CTranslate2 int8": ctranslate2_variant("int8"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--texts", help="one sentence per line (default: the built-in test set)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    model = keras.models.load_model(os.path.join(args.run, "model.keras"))
    tokenizer = Tokenizer.load(os.path.join(args.run, "tokenizer"))
    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [line.strip() for line in f][: args.sentences]
    else:
        texts = numbers_split("test").sources[: args.sentences]
    print(f"{machine()}; {len(texts)} sentences, batches of {args.batch}")
    with tempfile.TemporaryDirectory() as folder:
        export_ctranslate2(model, tokenizer, os.path.join(folder, "ct2"))
        for beam in (4, 1):
            functions = variants(model, tokenizer, texts, args.batch, beam, folder)
            outputs = {name: function() for name, function in functions.items()}  # warm-up
            times = {name: [] for name in functions}
            for _ in range(args.rounds):
                for name, function in functions.items():
                    started = time.perf_counter()
                    function()
                    times[name].append(time.perf_counter() - started)
            rates = {name: len(texts) / statistics.median(t) for name, t in times.items()}
            print(f"beam {beam}:")
            for name, rate in rates.items():
                print(f"  {name:24s} {rate:8.1f} sentences/s")
            print(f"  SavedModel / CTranslate2 float32: {rates['SavedModel'] / rates['CTranslate2 float32']:.2f}x")
            same = sum(a == b for a, b in zip(outputs["Translator"], outputs["CTranslate2 float32"]))
            print(f"  same translations, ours vs CTranslate2 float32: {same}/{len(texts)}")
            same = sum(a == b for a, b in zip(outputs["SavedModel"], outputs["SavedModel, full batch"]))
            print(f"  same translations, SavedModel vs its full-batch loop: {same}/{len(texts)}")


if __name__ == "__main__":
    sys.exit(main())
