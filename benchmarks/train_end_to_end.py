"""End-to-end training throughput: train.py's pipeline (length buckets, token-budget batches)
against the common recipe of padding every batch to a fixed length of 40 with the keras-hub model.

    python benchmarks/train_end_to_end.py [--steps 12] [--rounds 3]

The text has a realistic spread of lengths: the built-in number words, and sentences of one to
ten numbers joined by "and" (up to ~120 tokens). Both sides train the same dimensions (d_model
256, 4 heads, d_ff 1024, 3 + 3 layers) with the same step function, and get the same padded
batch size (64 x 40 = 2,560 tokens). The figure is useful target tokens per second: real tokens
the model trains on (padding excluded; tokens past 40 that the fixed recipe truncates are lost
to it and not counted).
"""

import argparse
import sys
import tempfile

from common import alternate, keras_hub_seq2seq, machine, median

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfx_transformer as tt  # noqa: E402
from tfx_transformer.tasks.translation import data as data_lib  # noqa: E402
from tfx_transformer.data import Tokenizer  # noqa: E402
from tfx_transformer.tokens import START_ID  # noqa: E402
from tfx_transformer.runs import RunPaths  # noqa: E402
from tfx_transformer.training.distribute import distributed_batches  # noqa: E402
from tfx_transformer.training.options import TrainOptions  # noqa: E402
from tfx_transformer.training.trainer import Trainer  # noqa: E402
from train_step import DIMS, make_step  # noqa: E402

FIXED_LENGTH, BATCH_ROWS, MAX_LENGTH = 40, 64, 128


def long_text(count, seed=0):
    """Number words alone and as sentences of several numbers."""
    rng = np.random.default_rng(seed)
    base = data_lib.numbers_split("train", sizes={"train": count, "validation": 10, "test": 10})
    sources, targets = [], []
    for i in range(count):
        parts = rng.integers(0, count, size=int(rng.choice([1, 1, 1, 2, 3, 5, 10])))
        sources.append(" and ".join(base.sources[p] for p in parts))
        targets.append(" et ".join(base.targets[p] for p in parts))
    return data_lib.ParallelText(sources, targets)


def fixed_batches(encoded, rng):
    """The common recipe: every sequence padded or cut to 40 tokens, batches of 64 rows."""
    order = rng.permutation(len(encoded.sources))
    batches = []
    for start in range(0, len(order) - BATCH_ROWS + 1, BATCH_ROWS):
        source = np.zeros((BATCH_ROWS, FIXED_LENGTH), "int32")
        decoder_in = np.zeros_like(source)
        labels = np.zeros_like(source)
        for row, index in enumerate(order[start : start + BATCH_ROWS]):
            s = encoded.sources[index][:FIXED_LENGTH]
            t = encoded.targets[index][:FIXED_LENGTH]
            source[row, : len(s)] = s
            decoder_in[row, : len(t)] = [START_ID] + t[:-1]
            labels[row, : len(t)] = t
        batches.append((source, decoder_in, labels))
    return batches


def padding_of(batches):
    real = sum(int((b[0] != 0).sum() + (b[2] != 0).sum()) for b in batches)
    total = sum(b[0].size + b[2].size for b in batches)
    return 1.0 - real / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=12, help="steps timed per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    text = long_text(args.pairs)
    tokenizer = Tokenizer.train(text.sources + text.targets)
    encoded = data_lib.encode_pairs(tokenizer, text, MAX_LENGTH, "truncate")
    lengths = np.array([len(t) for t in encoded.targets])
    print(f"{len(lengths)} pairs, target tokens: median {int(np.median(lengths))}, 90th percentile "
          f"{int(np.percentile(lengths, 90))}, max {lengths.max()}; vocabulary {tokenizer.vocab_size}")

    ours_batches, ours_padding = data_lib.make_batches(encoded, BATCH_ROWS * FIXED_LENGTH, MAX_LENGTH, 0)
    fixed = fixed_batches(encoded, np.random.default_rng(0))
    fixed_padding = padding_of(fixed)
    print(f"padding: ours {ours_padding:.1%} (length buckets, {BATCH_ROWS * FIXED_LENGTH}-token budget), "
          f"fixed length 40: {fixed_padding:.1%} (and it cuts longer pairs)")

    # Ours: train.py's own trainer and distributed input, as `python train.py` runs them.
    keras.utils.set_random_seed(0)
    config = tt.TransformerConfig(
        vocab_size=tokenizer.vocab_size, max_length=MAX_LENGTH, share_embeddings=False, **DIMS
    )
    strategy = tf.distribute.get_strategy()
    scratch = tempfile.mkdtemp()
    trainer = Trainer(TrainOptions(output=scratch), config, strategy, RunPaths(scratch))
    train_step = trainer.make_train_step()
    iterator = iter(distributed_batches(strategy, ours_batches * 50, len(ours_batches) * 50, 0, 3))
    theirs_step = make_step(keras_hub_seq2seq(tokenizer.vocab_size, FIXED_LENGTH, **DIMS), False)
    fixed_iter = iter(fixed * 50)
    useful = {"ours": [], "keras-hub, fixed 40": []}

    def run_ours():
        count = 0
        for _ in range(args.steps):
            count += int(float(train_step(iterator)[2]))  # real target tokens of the batch
        useful["ours"].append(count)

    def run_theirs():
        count = 0
        for _ in range(args.steps):
            source, decoder_in, labels = next(fixed_iter)
            theirs_step(tf.constant(source), tf.constant(decoder_in), tf.constant(labels)).numpy()
            count += int((labels != 0).sum())
        useful["keras-hub, fixed 40"].append(count)

    functions = {"ours": run_ours, "keras-hub, fixed 40": run_theirs}
    for function in functions.values():
        function()  # warm-up (tracing)
    for values in useful.values():
        values.clear()
    times = alternate(functions, args.rounds)
    rates = {name: median([u / t for u, t in zip(useful[name], times[name])]) for name in functions}
    print(f"\nuseful target tokens/s: ours {rates['ours']:.0f}, keras-hub fixed-40 "
          f"{rates['keras-hub, fixed 40']:.0f}, ratio {rates['ours'] / rates['keras-hub, fixed 40']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
