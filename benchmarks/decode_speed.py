"""Decoding speed: the export's sentences per second at beam 1 and beam 4, and the key/value
cache's speed-up over recomputing the decoder each step at an output length of 64.

    python benchmarks/decode_speed.py --run runs/default [--batch 32] [--repeats 7]

Uses the run's model.keras, tokenizer/ and validation sentences of the built-in task. Every
figure is the median of --repeats timed calls after a warm-up call; the compared variants are
measured in alternation so that machine noise hits them alike.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfx_transformer as tt  # noqa: E402
from tfx_transformer.tasks.translation import data as data_lib  # noqa: E402
from tfx_transformer.export import export_module  # noqa: E402
from tfx_transformer.tasks.translation.serving import TranslationServingModule  # noqa: E402
from tfx_transformer.data import Tokenizer  # noqa: E402
from tfx_transformer.tokens import END_ID  # noqa: E402


def median_seconds(functions, repeats):
    """{name: median seconds}, calling the functions in turn, `repeats` rounds after a warm-up."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output-length", type=int, default=64)
    args = parser.parse_args(argv)

    model = keras.models.load_model(os.path.join(args.run, "model.keras"))
    tokenizer = Tokenizer.load(os.path.join(args.run, "tokenizer"))
    texts = data_lib.numbers_split("validation").sources[: args.batch]
    print(f"machine: {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"model: {model.model_config.to_dict()}")

    # 1. The SavedModel, as TF Serving runs it: text in, text out.
    with tempfile.TemporaryDirectory() as folder:
        servings = {}
        for beam in (1, 4):
            path = export_module(TranslationServingModule(model, tokenizer, beam_size=beam), os.path.join(folder, f"beam{beam}"))
            servings[f"beam {beam}"] = tf.saved_model.load(path).signatures["serving_default"]
        batch = tf.constant(texts)
        seconds = median_seconds({name: (lambda f=f: f(text=batch)) for name, f in servings.items()}, args.repeats)
        print(f"\nexport, batch of {len(texts)} sentences (text in, translation out):")
        for name, value in seconds.items():
            print(f"  {name}: {len(texts) / value:8.1f} sentences/s ({value * 1000:.1f} ms per batch)")

    # 2. Cached against recomputed decoding, forced to run all output positions.
    ids = tokenizer.encode(texts)
    width = max(map(len, ids)) + 1
    source = np.array([row + [END_ID] + [0] * (width - len(row) - 1) for row in ids], "int32")
    length = args.output_length
    spec = [tf.TensorSpec([None, None], tf.int32)]

    def compiled(decode, **kwargs):
        # end_id=-1 is never produced, so every call decodes all `length` positions.
        function = tf.function(lambda s: decode(model, s, max_length=length, end_id=-1, **kwargs), input_signature=spec)
        return lambda: function(tf.constant(source))

    print(f"\nkey/value cache, batch {len(texts)}, {length} output tokens:")
    for label, decode, kwargs in (
        ("greedy", tt.greedy_decode, {}),
        ("beam 4", tt.beam_search, {"beam_size": 4}),
    ):
        seconds = median_seconds(
            {
                "cached": compiled(decode, use_cache=True, **kwargs),
                "recomputed": compiled(decode, use_cache=False, **kwargs),
            },
            args.repeats,
        )
        speedup = seconds["recomputed"] / seconds["cached"]
        print(
            f"  {label}: cached {seconds['cached'] * 1000:.0f} ms, recomputed "
            f"{seconds['recomputed'] * 1000:.0f} ms, speed-up {speedup:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
