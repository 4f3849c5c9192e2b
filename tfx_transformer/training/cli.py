"""Command line of `python train.py`: flags -> TrainOptions -> training.loop.run."""

import argparse
import json
import os
import sys

from tfx_transformer.config import PRESETS
from tfx_transformer.data import DataError
from tfx_transformer.tasks import TASKS
from tfx_transformer.training.distribute import STRATEGIES
from tfx_transformer.training.loop import run
from tfx_transformer.training.options import TrainOptions


def build_parser():
    """The flags; each help text names its default once (they are None here, see below)."""
    defaults = TrainOptions()
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a Transformer (an encoder-decoder translator, or with --task tagging "
        "an encoder tagger) and leave config.json, tokenizer/, logs/, model.keras, "
        "export/<version>/ and metrics.json in --output.",
    )
    add = parser.add_argument
    # Defaults are None here so that --config values apply unless a flag is given.
    add("--output", help=f"run folder (default {defaults.output})")
    add("--task", choices=list(TASKS), help="translation (default): the encoder-decoder "
        "Transformer; tagging: the encoder with a tag per token (e.g. named entities); lm: a "
        "decoder-only language model over segments of max_length tokens (Transformer-XL memory "
        "with --set memory_length=M --set position=transformer_xl)")
    add("--preset", choices=sorted(PRESETS), help=f"model size (default {defaults.preset})")
    specs = "; ".join(f"{name}: {task.data_specs}" for name, task in TASKS.items())
    task_data = ", ".join(f"{name} {task.default_data}" for name, task in TASKS.items())
    add("--data", help=f"{specs} (default: {task_data})")
    add("--valid-data", help="validation data spec (default: the spec's own validation split, "
        "or pairs held out of --data)")
    add("--test-data", help="test data spec, scored at the end (the built-in sets have their own)")
    task_epochs = ", ".join(f"{name} {task.default_epochs}" for name, task in TASKS.items())
    add("--epochs", type=int, help=f"passes over the training data (default: {task_epochs})")
    add("--steps", type=int, help="cap on the total number of training steps")
    add("--batch-tokens", type=int, help=f"padded tokens per batch (default {defaults.batch_tokens})")
    add("--max-length", type=int, help="longest sequence in tokens (default: the preset's)")
    add("--long-pairs", choices=["drop", "truncate"],
        help="what to do with longer training pairs or sentences (default drop)")
    add("--vocab-size", type=int, help="tokenizer vocabulary bound; tagging: the most frequent words "
        f"kept (default {defaults.vocab_size})")
    add("--word-dropout", type=float, help="tagging: share of training words replaced by <unk>, "
        f"so that unseen words are tagged from context (default {defaults.word_dropout})")
    add("--set", action="append", metavar="FIELD=VALUE", default=[],
        help="override a TransformerConfig field, e.g. --set d_model=128 (repeatable)")
    add("--warmup-steps", type=int, help=f"learning-rate warm-up (default {defaults.warmup_steps})")
    add("--learning-rate-scale", type=float,
        help=f"multiplies the paper's schedule (default {defaults.learning_rate_scale})")
    task_smoothing = ", ".join(f"{name} {task.default_label_smoothing}" for name, task in TASKS.items())
    add("--label-smoothing", type=float, help=f"(default: {task_smoothing})")
    add("--clipnorm", type=float, help="clip each gradient to this norm")
    add("--strategy", choices=list(STRATEGIES),
        help="tf.distribute strategy (default auto: multiworker with TF_CONFIG, mirrored on "
        "several GPUs, else default)")
    add("--cpu-devices", type=int, help="split the CPU into N logical devices (to try mirrored)")
    add("--mixed-precision", choices=["none", "bf16", "fp16"], help="(default none)")
    add("--jit-compile", action="store_const", const=True, help="XLA-compile the training step")
    add("--seed", type=int, help=f"(default {defaults.seed})")
    add("--eval-every", type=int, help="steps between evaluations (default: every epoch)")
    add("--eval-examples", type=int, help="validation pairs decoded; validation sentences held "
        "out of --data when no other says; lm: validation and test segments scored "
        f"(default {defaults.eval_examples})")
    add("--beam-size", type=int, help=f"translation: beam size (default {defaults.beam_size})")
    add("--length-penalty", type=float, help=f"translation: GNMT alpha (default {defaults.length_penalty})")
    add("--checkpoint-every", type=int, help=f"steps between checkpoints (default {defaults.checkpoint_every})")
    add("--log-every", type=int, help=f"steps between TensorBoard points (default {defaults.log_every})")
    add("--no-export", dest="export", action="store_const", const=False, help="skip the SavedModel")
    add("--resume", action="store_const", const=True, help="continue the run in --output")
    add("--config", help="JSON file of options (a run's config.json works); flags override it")
    return parser


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def options_from_args(argv=None):
    args = build_parser().parse_args(argv)
    values = {}
    if args.config:
        if not os.path.exists(args.config):
            raise ValueError(f"--config {args.config}: no such file.")
        with open(args.config, encoding="utf-8") as f:
            try:
                loaded = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"--config {args.config}: not valid JSON ({error}).") from None
        values.update(loaded.get("options", loaded))  # a run's config.json nests them
        if "options" in loaded and "model" in loaded:
            values.setdefault("model", {})
    flags = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key not in ("config", "set")
    }
    values.update(flags)
    model = dict(values.get("model", {}))
    for item in args.set:
        field, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE. Received: {item!r}")
        model[field.strip()] = _parse_value(raw.strip())
    values["model"] = model
    return TrainOptions.from_dict(values)


def main(argv=None):
    try:
        options = options_from_args(argv)
        run(options)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        kind = "data error" if isinstance(error, DataError) else "error"
        print(f"{kind}: {error}", file=sys.stderr)
        return 2
    return 0
