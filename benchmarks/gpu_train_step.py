"""Training-step speed on an accelerator: our Transformer against the keras-hub seq2seq recipe,
on the JAX backend with mixed_bfloat16.

    KERAS_BACKEND=jax python benchmarks/gpu_train_step.py [--rounds 5] [--steps 10]

Both models: the `base` preset's dimensions (d_model 512, 8 heads, d_ff 2048, 6 + 6 layers,
dropout 0.1), vocabulary 32,000, learned positions, separate output projection; batches of
128 x 64 source and target tokens (no padding); the same jitted step (label-smoothed cross
entropy, Adam 0.9/0.98/1e-9, weights and optimizer state donated). The models alternate for
`--rounds` rounds of `--steps` steps after a compiling warm-up; the figure is the median target
tokens per second.

Model FLOPs utilization counts 6 x the non-embedding parameters per token (the encoder's weights
see the source token, the decoder's the target token) plus the attention term 6 x d_model x
(encoder layers x S + decoder layers x (T + S)), against `--peak-tflops` (989: an H100's or
H200's dense bf16). The output projection is embedding-sized and left out of that count, as the
convention has it; the figure that includes it is printed beside.

Models (`--models`, in the order given): `ours` (the preset: attention dropout = dropout, so
attention runs unfused while training), `ours-fused` (attention dropout 0: the attention runs as
`keras.ops.dot_product_attention`, cuDNN's fused kernel where it applies), `ours-unfused` (attention
dropout 0, the fused path turned off: what fusing alone gives), `ours-paper` (attention and
feed-forward dropout 0: the paper drops sublayer outputs and embeddings only; fused),
`ours-paper-mask` (that with padding given to cuDNN as a mask, not as key lengths: what the
lengths give), `ours-paper-packed` (`ours-paper` on packed rows, as `train.py` trains on JAX:
several examples a row, each attending only to itself, so the masks go to cuDNN as a bias; its
rows are nearly full whatever `--padding` says) and `keras-hub`.

`--seconds S` bounds the whole: the rounds stop when it is spent (one always runs), and a model
whose compilation (reckoned as long as the longest so far) would end in its last fifth is skipped,
so the models that matter most come first in `--models`.

`--count-flops` compiles nothing and times nothing: it prints XLA's count of each model's step
(the traced program, before XLA optimizes it) per position of the batch against the count above
with the output projection; it runs on a CPU. Measured 2026-12-02 for base at 64 x 64, vocabulary
32,000: ours 1.015x, keras-hub 1.017x, so an MFU short of the targets is not extra arithmetic in
the step but time the device spends off its matrix units.

`--padding SHARE` pads each row on the right (the same lengths for source and target rows,
SHARE of the positions on average, as a bucketed corpus leaves some); tokens per second then
count real target tokens.

Only JAX, Keras and keras-hub are needed (no TensorFlow), so it runs where they alone are
installed. `--preset tiny --vocab 1000 --batch 8 --length 16` makes a quick CPU check.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from common import alternate, keras_hub_seq2seq, median  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfx_transformer as tt  # noqa: E402
from tfx_transformer.training.losses import smoothed_token_losses  # noqa: E402


def make_step(model):
    """A jitted (state, batch) -> (loss, state) step; state = (trainable, non-trainable,
    optimizer variables), so dropout's seed state advances with the non-trainable ones."""
    import jax

    optimizer = keras.optimizers.Adam(1e-4, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
    optimizer.build(model.trainable_variables)

    def loss_of(trainable, non_trainable, *batch):
        inputs = {"source_ids": batch[0], "target_ids": batch[1]}
        if len(batch) == 5:  # packed rows
            inputs.update(source_segment_ids=batch[2], target_segment_ids=batch[3])
        labels = batch[-1]
        logits, non_trainable = model.stateless_call(
            trainable, non_trainable, inputs, training=True
        )
        losses, count = smoothed_token_losses(labels, logits, 0.1)
        return keras.ops.sum(losses) / count, non_trainable

    gradient_of = jax.value_and_grad(loss_of, has_aux=True)

    def step(state, *batch):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), gradients = gradient_of(trainable, non_trainable, *batch)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    return jax.jit(step, donate_argnums=0), state


MODELS = ("ours", "ours-fused", "ours-unfused", "ours-paper", "ours-paper-mask",
          "ours-paper-packed", "keras-hub")


def build(name, dims, vocab, length):
    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    if name.startswith("ours"):
        attention_dropout = None if name == "ours" else 0.0
        ffn_dropout = 0.0 if name.startswith("ours-paper") else None
        config = tt.TransformerConfig(
            vocab_size=vocab, max_length=length, position="learned", share_embeddings=False,
            attention_dropout=attention_dropout, ffn_dropout=ffn_dropout, **dims
        )
        model = tt.Transformer(config)
        for layer in model._flatten_layers():
            if isinstance(layer, tt.layers.MultiHeadAttention):
                layer.fuse_attention = name != "ours-unfused"
                layer.padding_as_lengths = name != "ours-paper-mask"
    else:
        model = keras_hub_seq2seq(vocab, length, **dims)
    keras.config.set_dtype_policy("float32")
    return model


def packed_segments(rng, rows, length):
    """[rows, length] segment ids: each row cut into examples of length / 8 to length / 2
    tokens, one after another, until the next would not fit (the rest is padding, 0)."""
    segments = np.zeros((rows, length), "int32")
    shortest, longest = max(1, length // 8), max(1, length // 2)
    for row in range(rows):
        at, segment = 0, 1
        while True:
            size = int(rng.integers(shortest, longest + 1))
            if at + size > length:
                size = length - at if length - at >= shortest else 0
            if not size:
                break
            segments[row, at : at + size] = segment
            at, segment = at + size, segment + 1
    return segments


def flops_per_target_token(dims, vocab, source_length, target_length):
    """(FLOPs without, with the output projection) per target token of one training step."""
    d, d_ff = dims["d_model"], dims["d_ff"]
    encoder_layer = 4 * d * d + 2 * d * d_ff  # attention projections + feed-forward, biases aside
    decoder_layer = 8 * d * d + 2 * d * d_ff
    ratio = source_length / target_length  # source tokens per target token
    weights = 6 * (dims["num_encoder_layers"] * encoder_layer * ratio
                   + dims["num_decoder_layers"] * decoder_layer)
    attention = 6 * d * (dims["num_encoder_layers"] * source_length * ratio
                         + dims["num_decoder_layers"] * (target_length + source_length))
    base = weights + attention
    return base, base + 6 * d * vocab


def xla_flops(step, state, batch):
    """XLA's FLOP count of one call of the jitted `step` (traced and lowered, not compiled)."""
    analysis = step.lower(state, *batch).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def count_flops(names, dims, args, batches):
    """Prints each model's XLA step FLOPs per batch position against `flops_per_target_token`."""
    _, analytic = flops_per_target_token(dims, args.vocab, args.length, args.length)
    print("model              step GFLOPs   per position   / counted above (with output projection)")
    for name in names:
        step, state = make_step(build(name, dims, args.vocab, args.length))
        arrays = batches[name][0]
        flops = xla_flops(step, state, arrays)
        per_position = flops / arrays[0].size
        print(f"{name:<16} {flops / 1e9:13,.1f} {per_position:14.4g} {per_position / analytic:12.3f}x")


def compiled_steps(names, dims, args, batches, deadline):
    """{name: a function that runs one timed step}, each model compiled by a first step. With a
    deadline, a model is skipped (and said so) where a compilation as long as the longest so far
    would end in the budget's last fifth, which the timed rounds keep."""
    states, steps, longest = {}, {}, 0.0
    for name in names:
        started = time.perf_counter()
        if deadline is not None and started + longest > deadline - args.seconds / 5:
            print(f"{name}: skipped, out of --seconds (a compilation took {longest:.0f} s)")
            continue
        model = build(name, dims, args.vocab, args.length)
        print(f"{name}: {model.count_params():,} parameters")
        step, states[name] = make_step(model)
        loss, states[name] = step(states[name], *batches[name][0])  # trace and compile
        print(f"{name}: first loss {float(loss):.3f}", flush=True)
        longest = max(longest, time.perf_counter() - started)

        def run(name=name, step=step):
            loss, states[name] = step(states[name], *batches[name][0])
            loss.block_until_ready()

        steps[name] = run
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    parser.add_argument("--padding", type=float, default=0.0,
                        help="mean share of right padding per row, in [0, 0.5]")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--seconds", type=float, default=0,
                        help="a time budget (0: none): fewer rounds, and the models last in "
                        "--models skipped, where compiling and timing them all would not fit")
    parser.add_argument("--count-flops", action="store_true",
                        help="print XLA's FLOP count of each step against the model's; no timing")
    parser.add_argument("--models", default="ours,ours-paper,ours-paper-mask,ours-paper-packed,"
                        "keras-hub",
                        help=f"comma-separated, of {MODELS}")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    if not 0.0 <= args.padding <= 0.5:
        parser.error(f"--padding takes a share in [0, 0.5]; got {args.padding}")
    if not names or set(names) - set(MODELS):
        parser.error(f"--models takes names of {MODELS}; got {args.models!r}")
    if keras.backend.backend() != "jax":
        parser.error(f"runs on the JAX backend (KERAS_BACKEND=jax); got {keras.backend.backend()}")
    import jax

    preset = tt.PRESETS[args.preset]
    dims = {k: preset[k] for k in ("d_model", "num_heads", "d_ff", "num_encoder_layers",
                                   "num_decoder_layers", "dropout")}
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); JAX {jax.__version__}, "
          f"Keras {keras.__version__}")
    print(f"{args.preset}: {dims}, vocabulary {args.vocab}, batches {args.batch} x {args.length}")
    rng = np.random.default_rng(0)
    padded = np.floor(rng.uniform(0, 2 * args.padding, size=(args.batch, 1)) * args.length)
    real = np.arange(args.length)[None, :] < args.length - np.minimum(padded, args.length - 1)
    batch = [jax.numpy.asarray(rng.integers(4, args.vocab, size=real.shape) * real, "int32")
             for _ in range(3)]
    tokens = int(real.sum())
    print(f"padding: {1 - tokens / real.size:.1%} of the positions")
    batches = {name: (batch, tokens) for name in names}
    if "ours-paper-packed" in names:
        segments = packed_segments(rng, args.batch, args.length)
        ids = [rng.integers(4, args.vocab, size=segments.shape) * (segments > 0) for _ in range(3)]
        arrays = [jax.numpy.asarray(a, "int32") for a in ids[:2] + [segments, segments] + ids[2:]]
        packed_tokens = int((segments > 0).sum())
        batches["ours-paper-packed"] = (arrays, packed_tokens)
        print(f"packed rows: {1 - packed_tokens / segments.size:.1%} padding, "
              f"{segments.max(axis=1).mean():.1f} examples a row")
    if args.count_flops:
        count_flops(names, dims, args, batches)
        return 0
    deadline = time.perf_counter() + args.seconds if args.seconds else None
    steps = compiled_steps(names, dims, args, batches, deadline)
    times = alternate(steps, args.rounds, args.steps, deadline)
    print(f"\n{len(next(iter(times.values())))} rounds of {args.steps} steps timed")
    flops, flops_with_output = flops_per_target_token(dims, args.vocab, args.length, args.length)
    print("model              target tok/s   ms/step   MFU    MFU with output projection")
    rates = {}
    for name, values in times.items():
        seconds = median(values)
        rates[name] = batches[name][1] / seconds
        mfu = rates[name] * flops / (args.peak_tflops * 1e12)
        mfu_all = rates[name] * flops_with_output / (args.peak_tflops * 1e12)
        print(f"{name:<16} {rates[name]:14,.0f} {1000 * seconds:9.2f} {mfu:6.1%} {mfu_all:10.1%}")
    if "keras-hub" in rates:
        for name in rates:
            if name != "keras-hub":
                print(f"{name} / keras-hub: {rates[name] / rates['keras-hub']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
