"""The Universal Transformer against the vanilla one: length generalization on the algorithmic
tasks, ponder steps, and what the recurrence costs per token; optionally one real-text row.

    python benchmarks/universal.py [--tasks copy,reverse,addition] [--seeds 3] [--steps 1000]
        [--layers 2] [--universal-steps 4] [--act-steps 6] [--out /tmp/universal]
        [--real-text-budget 600 --data ../shared/data/multi30k-en-fr] [-- extra train.py flags]

Three models per task, each trained by `python train.py --data builtin:algorithmic:TASK` for
the same --steps on the same data, once per seed:

- vanilla: --layers encoder and decoder blocks (the tiny preset's widths otherwise);
- universal: one shared block per stack applied --universal-steps times, its feed-forward
  width raised so that its parameter count matches vanilla's (the closest multiple of 32);
- universal + ACT: the same block, up to --act-steps applications decided per position.

Per model: test exact match (whole output right, greedy) per input-length band (training saw
1-20 symbols; the test holds 21-40 and 41-60), in-distribution validation exact match, and the
mean ponder steps per real source and target position on the test set. Before the runs, the
time per token of training and of cached decoding against vanilla's, measured in one process
with the three models taking turns (`--timing-only` measures just that).

With --real-text-budget SECONDS it also trains vanilla (the small preset) and universal + ACT at
the same width on the shared corpus, each with `--time-budget SECONDS`, and prints their test
BLEU: equal time, not equal steps.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
VARIANTS = ("vanilla", "universal", "universal_act")


def block_parameters(d_model, num_heads, d_ff, layers=None, universal_steps=0, act=False):
    """Parameters of the encoder and decoder stacks (the embeddings are the same for all)."""
    import numpy as np

    from tfx_transformer.config import TransformerConfig
    from tfx_transformer.models.base import make_stack

    config = TransformerConfig(
        vocab_size=16, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
        num_encoder_layers=layers or 1, num_decoder_layers=layers or 1,
        universal_steps=universal_steps, adaptive_computation=act,
    )
    total = 0
    for decoder in (False, True):
        stack = make_stack(config, layers or 1, decoder=decoder)
        shape = (None, None, d_model)
        stack.build(shape, shape) if decoder else stack.build(shape)
        total += int(sum(np.prod(w.shape) for w in stack.weights))
    return total


def matched_width(d_model, num_heads, d_ff, layers, universal_steps):
    """The universal block's feed-forward width whose stacks hold as many parameters as
    `layers` vanilla blocks of width d_ff."""
    target = block_parameters(d_model, num_heads, d_ff, layers=layers)
    # The count is linear in the width: two points give the line.
    low = block_parameters(d_model, num_heads, 32, universal_steps=universal_steps)
    high = block_parameters(d_model, num_heads, 64, universal_steps=universal_steps)
    width = 32 + (target - low) / ((high - low) / 32)
    return max(32, int(round(width / 32)) * 32), target


def variant_flags(variant, args, universal_width):
    if variant == "vanilla":
        return ["--set", f"num_encoder_layers={args.layers}", "--set", f"num_decoder_layers={args.layers}"]
    steps = args.universal_steps if variant == "universal" else args.act_steps
    flags = ["--set", f"universal_steps={steps}", "--set", f"d_ff={universal_width}"]
    if variant == "universal_act":
        flags += ["--set", "adaptive_computation=true"]
    return flags


def train(command, folder):
    os.makedirs(folder, exist_ok=True)
    log_path = os.path.join(folder, "train.log")
    with open(log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    if completed.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            sys.exit(f"train.py failed (log in {log_path}):\n{f.read()[-3000:]}")
    with open(os.path.join(folder, "run", "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def analyse(run_folder, task):
    """Mean ponder steps per real position on the test set (teacher-forced)."""
    import numpy as np

    from tfx_transformer.tasks.translation import data as data_lib
    from tfx_transformer.tasks.translation.translator import Translator
    from tfx_transformer.tokens import START_ID

    translator = Translator.from_run(run_folder, beam_size=1)
    model, tokenizer = translator.model, translator.tokenizer
    test = data_lib.algorithmic_split(task, "test")
    encoded = data_lib.encode_pairs(tokenizer, test, model.model_config.max_length, "truncate")
    ponder = {"encoder": [], "decoder": []}
    for start in range(0, len(test), 100):
        rows = range(start, min(start + 100, len(test)))
        source = _pad([encoded.sources[i] for i in rows])
        # Teacher forcing: the decoder reads the start token and the reference.
        decoder_in = _pad([[START_ID] + encoded.targets[i][:-1] for i in rows])
        steps = model.ponder_steps({"source_ids": source, "target_ids": decoder_in})
        for side, ids in (("encoder", source), ("decoder", decoder_in)):
            ponder[side].extend(np.asarray(steps[side])[ids != 0].tolist())
    return {
        "ponder_encoder": float(np.mean(ponder["encoder"])),
        "ponder_decoder": float(np.mean(ponder["decoder"])),
    }


def _pad(rows):
    import numpy as np

    width = max(len(r) for r in rows)
    return np.array([list(r) + [0] * (width - len(r)) for r in rows], "int32")


def algorithmic_rows(args, extra, universal_width):
    results = {}
    for task in args.tasks.split(","):
        for variant in VARIANTS:
            for seed in range(args.seeds):
                folder = os.path.join(args.out, task, variant, f"seed{seed}")
                command = [
                    sys.executable, os.path.join(ROOT, "train.py"),
                    "--data", f"builtin:algorithmic:{task}", "--preset", "tiny",
                    "--steps", str(args.steps), "--seed", str(seed), "--beam-size", "1",
                    "--eval-examples", "200", "--average-last", "0", "--no-export",
                    "--output", os.path.join(folder, "run"),
                    *variant_flags(variant, args, universal_width), *extra,
                ]
                metrics = train(command, folder)
                row = {
                    "bands": metrics["test_exact_match_by_length"],
                    "validation": metrics["exact_match"],
                    **analyse(os.path.join(folder, "run"), task),
                }
                results.setdefault(task, {}).setdefault(variant, []).append(row)
                print(f"{task} {variant} seed {seed}: {json.dumps(row)}", flush=True)
    return results


def time_per_token(args, universal_width, rounds=5, batch_size=64):
    """{variant: (training, decoding) seconds per target token}, medians of `rounds` rounds in
    which the variants take turns (one process, so the machine's load hits all alike). Training:
    a compiled step (loss, gradients, Adam) on a batch of reverse pairs of 1-20 symbols;
    decoding: cached greedy decoding of the same batch with the references forced, so that every
    model writes the same tokens."""
    import keras
    import numpy as np
    import tensorflow as tf

    from common import alternate, median
    from tfx_transformer import Transformer, TransformerConfig
    from tfx_transformer.decoding import greedy_decode
    from tfx_transformer.tokens import END_ID, START_ID
    from tfx_transformer.training.losses import smoothed_token_losses

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=batch_size)
    sources = [list(rng.integers(4, 14, size=n)) for n in lengths]
    source = _pad([s + [END_ID] for s in sources])
    labels = _pad([s[::-1] + [END_ID] for s in sources])
    decoder_in = _pad([[START_ID] + s[::-1] for s in sources])
    tokens = int((labels != 0).sum())
    steps = {}
    for variant in VARIANTS:
        overrides = dict(arg.split("=", 1) for arg in variant_flags(variant, args, universal_width)[1::2])
        config = TransformerConfig.preset(
            "tiny", vocab_size=16, **{key: json.loads(value) for key, value in overrides.items()}
        )
        model = Transformer(config)
        optimizer = keras.optimizers.Adam(1e-4)
        optimizer.build(model.trainable_variables)

        @tf.function
        def train_step(model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                logits = model({"source_ids": source, "target_ids": decoder_in}, training=True)
                loss = tf.reduce_sum(smoothed_token_losses(labels, logits, 0.1)[0]) / tokens
                loss += tf.add_n(model.losses) if model.losses else 0.0
            optimizer.apply_gradients(
                zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            )

        decode = tf.function(lambda model=model: greedy_decode(
            model, source, max_length=labels.shape[1], prefix_ids=labels)[0])
        train_step()  # traced outside the timing
        decode()
        steps[f"{variant} training"], steps[f"{variant} decoding"] = train_step, decode
    times = alternate(steps, rounds)
    return {
        variant: (median(times[f"{variant} training"]) / tokens,
                  median(times[f"{variant} decoding"]) / tokens)
        for variant in VARIANTS
    }


def print_timing_table(timing):
    base_train, base_decode = timing["vanilla"]
    print("\n| model | training, ms per 1,000 target tokens | against vanilla | decoding, ms per "
          "1,000 tokens | against vanilla |")
    print("|---|---|---|---|---|")
    for variant, (train_seconds, decode_seconds) in timing.items():
        print(f"| {variant} | {1e6 * train_seconds:.1f} | {train_seconds / base_train:.2f}x | "
              f"{1e6 * decode_seconds:.1f} | {decode_seconds / base_decode:.2f}x |")


def mean_and_spread(values):
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.mean(values):.1%} ± {statistics.stdev(values):.1%}"


def print_algorithmic_table(results):
    print("\n| task | model | validation (1-20) | test 21-40 | test 41-60 | ponder steps "
          "(source / target) |")
    print("|---|---|---|---|---|---|")
    for task, variants in results.items():
        for variant, rows in variants.items():
            bands = list(rows[0]["bands"])
            print(
                f"| {task} | {variant} | {mean_and_spread([r['validation'] for r in rows])} | "
                + " | ".join(mean_and_spread([r["bands"][b] for r in rows]) for b in bands)
                + f" | {statistics.mean(r['ponder_encoder'] for r in rows):.2f} / "
                f"{statistics.mean(r['ponder_decoder'] for r in rows):.2f} |"
            )


def real_text_rows(args, extra, width):
    results = {}
    data = args.data
    splits = [f"parallel:{data}/{s}.en,{data}/{s}.fr" for s in ("train", "val", "test_2016_flickr")]
    for variant in ("vanilla", "universal_act"):
        folder = os.path.join(args.out, "real_text", variant)
        flags = [] if variant == "vanilla" else [
            "--set", f"universal_steps={args.act_steps}", "--set", "adaptive_computation=true",
            "--set", f"d_ff={width}",
        ]
        command = [
            sys.executable, os.path.join(ROOT, "train.py"), "--preset", "small",
            "--data", splits[0], "--valid-data", splits[1], "--test-data", splits[2],
            "--time-budget", str(args.real_text_budget), "--no-export",
            "--output", os.path.join(folder, "run"), *flags, *extra,
        ]
        metrics = train(command, folder)
        results[variant] = metrics
        print(f"real text {variant}: test BLEU {metrics['test_bleu']:.2f}, chrF "
              f"{metrics['test_chrf']:.2f}, {metrics['steps']} steps", flush=True)
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="copy,reverse,addition")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=2, help="vanilla's blocks per stack")
    parser.add_argument("--universal-steps", type=int, default=4)
    parser.add_argument("--act-steps", type=int, default=6, help="ACT's most steps")
    parser.add_argument("--out", default="/tmp/universal")
    parser.add_argument("--real-text-budget", type=float, default=0,
                        help="seconds per model on the shared corpus (0: no real-text row)")
    parser.add_argument("--data", default=os.path.join(SHARED, "data", "multi30k-en-fr"))
    parser.add_argument("--timing-only", action="store_true", help="only the time per token")
    args = parser.parse_args(argv)
    if args.real_text_budget and not os.path.isdir(args.data):
        sys.exit(f"{args.data} does not exist (the shared corpus lives beside the project).")
    if not args.timing_only and os.path.exists(args.out) and os.listdir(args.out):
        sys.exit(f"{args.out} is not empty; choose another --out.")
    sys.path.insert(0, HERE)
    from common import machine

    from tfx_transformer.config import PRESETS

    tiny = PRESETS["tiny"]
    width, parameters = matched_width(
        tiny["d_model"], tiny["num_heads"], tiny["d_ff"], args.layers, args.universal_steps
    )
    universal = block_parameters(tiny["d_model"], tiny["num_heads"], width, universal_steps=1)
    print(f"machine: {machine()}")
    print(f"stacks: vanilla {args.layers}+{args.layers} blocks, d_ff {tiny['d_ff']}: "
          f"{parameters:,} parameters; universal, one block per stack with d_ff {width}: "
          f"{universal:,} (+{tiny['d_model'] + 1} per stack for ACT's halting unit)", flush=True)
    results = {"time_per_token": time_per_token(args, width)}
    print_timing_table(results["time_per_token"])
    if args.timing_only:
        return
    results["algorithmic"] = algorithmic_rows(args, extra, width)
    print_algorithmic_table(results["algorithmic"])
    if args.real_text_budget:
        small = PRESETS["small"]
        real_width, _ = matched_width(
            small["d_model"], small["num_heads"], small["d_ff"], small["num_encoder_layers"], 1
        )
        results["real_text"] = real_text_rows(args, extra, real_width)
        print("\n| model | test BLEU | test chrF | steps in the budget |")
        print("|---|---|---|---|")
        for variant, metrics in results["real_text"].items():
            print(f"| {variant} | {metrics['test_bleu']:.2f} | {metrics['test_chrf']:.2f} | "
                  f"{metrics['steps']} |")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
