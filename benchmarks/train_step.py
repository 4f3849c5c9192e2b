"""Training-step speed: our Transformer against the keras-hub seq2seq recipe, same dimensions.

    python benchmarks/train_step.py [--rounds 5] [--steps 4]

Both models: d_model 256, 4 heads, d_ff 1024, 3 + 3 layers, vocabulary 8,000, learned positions,
separate output projection, dropout 0.1; batches of 64 x 32 tokens (no padding); the same
step function (label-smoothed cross entropy, Adam 0.9/0.98/1e-9). Ours is measured twice: as it
trains by default (dropout inside the feed-forward network too) and with `ffn_dropout=0`, which
drops where keras-hub's layers do (sublayer outputs and attention weights). Each precision and
XLA setting is measured for the models in alternating rounds after a warm-up; the figure is the
median target tokens per second over the rounds.
"""

import argparse
import sys

from common import alternate, keras_hub_seq2seq, machine, median

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfx_transformer as tt  # noqa: E402
from tfx_transformer.training.losses import smoothed_token_losses  # noqa: E402

DIMS = dict(d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3, num_decoder_layers=3, dropout=0.1)
VOCAB, BATCH, LENGTH = 8000, 64, 32


def make_step(model, jit_compile):
    optimizer = keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def step(source, decoder_in, labels):
        with tf.GradientTape() as tape:
            logits = model({"source_ids": source, "target_ids": decoder_in}, training=True)
            losses, count = smoothed_token_losses(labels, logits, 0.1)
            loss = tf.reduce_sum(losses) / count
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


OURS = {"ours": {}, "ours-ffn0": {"ffn_dropout": 0.0}}


def build(name, policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    if name in OURS:
        config = tt.TransformerConfig(vocab_size=VOCAB, max_length=LENGTH, position="learned",
                                      share_embeddings=False, **DIMS, **OURS[name])
        model = tt.Transformer(config)
    else:
        model = keras_hub_seq2seq(VOCAB, LENGTH, **DIMS)
    keras.config.set_dtype_policy("float32")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps timed per round")
    parser.add_argument("--settings", default="float32,float32+xla,bf16,bf16+xla")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    batch = (
        tf.constant(rng.integers(4, VOCAB, size=(BATCH, LENGTH)), tf.int32),
        tf.constant(rng.integers(4, VOCAB, size=(BATCH, LENGTH)), tf.int32),
        tf.constant(rng.integers(4, VOCAB, size=(BATCH, LENGTH)), tf.int32),
    )
    tokens = BATCH * LENGTH
    print(f"machine: {machine()}")
    counts = {name: build(name, "float32").count_params() for name in ("ours", "keras-hub")}
    print(f"parameters: ours {counts['ours']:,}, keras-hub {counts['keras-hub']:,}")
    rows = []
    for setting in args.settings.split(","):
        policy = "mixed_bfloat16" if setting.startswith("bf16") else "float32"
        jit = setting.endswith("+xla")
        steps = {}
        for name in (*OURS, "keras-hub"):
            step = make_step(build(name, policy), jit)
            step(*batch)  # trace and compile
            steps[name] = lambda step=step: step(*batch).numpy()
        times = alternate(steps, args.rounds, args.steps)
        rates = {name: tokens / median(values) for name, values in times.items()}
        rows.append((setting, rates))
        print(f"{setting:>13}: " + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
              + " target tokens/s", flush=True)
    print("\nsetting        ours tok/s   ours-ffn0 tok/s   keras-hub tok/s   ratios to keras-hub")
    for setting, rates in rows:
        theirs = rates["keras-hub"]
        print(f"{setting:<13} {rates['ours']:11.0f} {rates['ours-ffn0']:17.0f} {theirs:17.0f}   "
              f"{rates['ours'] / theirs:.2f}x, {rates['ours-ffn0'] / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
