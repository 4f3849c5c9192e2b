"""Command line of `python train.py`: flags -> TrainOptions -> training.loop.run."""

import argparse
import json
import os
import sys

from tfx_transformer.config import PRESETS
from tfx_transformer.data import DataError
from tfx_transformer.environment import environment
from tfx_transformer.tasks import TASKS
from tfx_transformer.runs import RunInUse
from tfx_transformer.training.loop import TrainingInterrupted, run
from tfx_transformer.training.options import (
    MIN_DEFAULT_STEPS_PER_WARMUP,
    MIN_STEPS_BETWEEN_EVALUATIONS,
    PRESET_TRAINING,
    STRATEGIES,
    TrainOptions,
)
from tfx_transformer.training.resume import RunFinished


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
    add("--data", help="; ".join(f"{name}: {task.data_specs}" for name, task in TASKS.items())
        + f" (default: {', '.join(f'{name} {task.default_data}' for name, task in TASKS.items())})")
    add("--valid-data", help="validation data spec (default: the spec's own validation split, "
        "or pairs held out of --data)")
    add("--test-data", help="test data spec, scored at the end (the built-in sets have their own)")
    task_epochs = ", ".join(f"{name} {task.default_epochs}" for name, task in TASKS.items())
    add("--epochs", type=int, help=f"passes over the training data (default: {task_epochs}, or "
        f"more on a small corpus, to make {MIN_DEFAULT_STEPS_PER_WARMUP} x --warmup-steps steps; "
        "with --steps or --time-budget, as many as they allow)")
    add("--steps", type=int, help="cap on the total number of training steps (without --epochs, "
        "the number of steps)")
    add("--batch-tokens", type=int, help="padded tokens per batch (default: the preset's, "
        f"{preset_defaults('batch_tokens')})")
    add("--max-length", type=int, help="longest sequence in tokens (default: the preset's)")
    add("--long-pairs", choices=["drop", "truncate"],
        help="what to do with longer training pairs or sentences (default drop)")
    add("--packing", action="store_const", const=True,
        help="translation, tagging: pack several pairs (sentences) into each row, one width a "
        "run chosen up to --max-length (one batch shape, little padding; the default on JAX)")
    add("--no-packing", dest="packing", action="store_const", const=False,
        help="translation, tagging: batch examples of similar length instead, one width per "
        "length bucket (the default on TensorFlow)")
    add("--stream-window", type=int, help=f"--data prepared:DIR: pairs shuffled and batched together "
        f"as they stream (default {defaults.stream_window:,}); memory grows with it, not the corpus")
    add("--vocab-size", type=int, help="tokenizer vocabulary bound; tagging: the most frequent words "
        f"kept (default {defaults.vocab_size})")
    add("--word-dropout", type=float, help="tagging: share of training words replaced by <unk>, "
        f"so that unseen words are tagged from context (default {defaults.word_dropout})")
    add("--set", action="append", metavar="FIELD=VALUE", default=[],
        help="override a TransformerConfig field, e.g. --set d_model=128 (repeatable)")
    add("--warmup-steps", type=int, help=f"learning-rate warm-up (default {defaults.warmup_steps})")
    add("--learning-rate-scale", type=float, help="multiplies the paper's schedule (default: the "
        f"preset's, {preset_defaults('learning_rate_scale')})")
    task_smoothing = ", ".join(f"{name} {task.default_label_smoothing}" for name, task in TASKS.items())
    add("--label-smoothing", type=float, help=f"(default: {task_smoothing})")
    add("--clipnorm", type=float, help="clip each gradient to this norm")
    add_engine_flags(add)
    add("--seed", type=int, help=f"(default {defaults.seed})")
    add("--eval-every", type=int, help="steps between evaluations (default: every epoch, or "
        f"every few where an epoch is under {MIN_STEPS_BETWEEN_EVALUATIONS} steps)")
    add("--eval-examples", type=int, help="translation: validation pairs decoded greedily at each "
        "evaluation (a random sample; the end of the run decodes the whole validation set with the "
        "beam); validation sentences held out of --data when no other says; lm: validation and test "
        f"segments scored (default {defaults.eval_examples})")
    add_ending_flags(add, defaults)
    add("--allow-misaligned", action="store_const", const=True, help="train on parallel text "
        "whose sides look shifted against each other (refused by default)")
    add("--beam-size", type=int, help=f"translation: beam size (default {defaults.beam_size})")
    add("--length-penalty", type=float, help=f"translation: GNMT alpha (default {defaults.length_penalty})")
    add("--bleu-tokenize", metavar="NAME", help="translation: how BLEU splits words, a sacrebleu "
        "tokenizer (13a, intl, zh, char, ja-mecab, ko-mecab, flores200, ...) or auto (default): zh, "
        "ja-mecab or char for validation references written without spaces (Chinese, Japanese, "
        "Thai...), ko-mecab for Korean where installed, 13a otherwise")
    add("--checkpoint-every", type=int, help=f"steps between checkpoints (default {defaults.checkpoint_every})")
    add("--log-every", type=int, help=f"steps between TensorBoard points (default {defaults.log_every})")
    add("--no-export", dest="export", action="store_const", const=False, help="skip the SavedModel")
    add("--resume", action="store_const", const=True, help="continue the run in --output")
    add("--config", help="JSON file of options (a run's config.json works); flags override it")
    add("--verbose", action="store_true", help="show TensorFlow's start-up messages too")
    return parser


def add_ending_flags(add, defaults):
    """How training ends, and which weights it keeps."""
    add("--time-budget", type=float, metavar="SECONDS", help="seconds for the whole job: training "
        "stops when what is left is what the final evaluation, test and export are estimated to "
        "need; without --epochs, the budget alone ends training")
    add("--early-stop", type=int, metavar="K", help="end training after K evaluations without a "
        "better validation score (BLEU, F1 or perplexity) (default 0: never)")
    add("--average-last", type=int, metavar="N", help="at the end, average the last N checkpoints' "
        "weights; the run keeps the better of these and the best weights on validation, scored on "
        f"the whole validation set (default {defaults.average_last}; 0 or 1: best only)")


def add_engine_flags(add):
    """How the steps run: devices, precision, compilation."""
    add("--strategy", choices=list(STRATEGIES),
        help="TensorFlow: the tf.distribute strategy (default auto: multiworker with TF_CONFIG, "
        "mirrored on several GPUs, else default). JAX: auto and mirrored split each batch over "
        "every local device (keras.distribution.DataParallel), default uses one, multiworker "
        "every process that keras.distribution.initialize() joined")
    add("--cpu-devices", type=int, help="split the CPU into N logical devices (to try mirrored)")
    add("--mixed-precision", choices=["auto", "none", "bf16", "fp16"],
        help="(default auto: bf16 on a GPU or TPU, and on TensorFlow on a CPU with AVX512-BF16 or "
        "AMX; none elsewhere; fp16 on TensorFlow only)")
    add("--jit-compile", action="store_const", const=True,
        help="TensorFlow: XLA-compile the training step (JAX always compiles it)")
    add("--no-compile-ahead", dest="compile_ahead", action="store_const", const=False,
        help="JAX: compile the training and evaluation steps (and the evaluations' decoding) "
        "for each shape when first met, not all of them side by side before training")


# `python train.py --help` prints this file, so that help needs no import of the package (whose
# import registers its Keras classes and so loads TensorFlow, seconds on a CPU). It is the parser's
# own help at HELP_COLUMNS columns; tests/training/test_cli.py keeps the two equal, and
# `write_help()` writes it again after the flags change.
HELP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_help.txt")
HELP_COLUMNS = 100


def format_help():
    """The parser's help as `python train.py --help` prints it."""
    with environment({"COLUMNS": str(HELP_COLUMNS)}):  # argparse wraps to $COLUMNS
        return build_parser().format_help()


def write_help():
    with open(HELP_FILE, "w", encoding="utf-8") as f:
        f.write(format_help())


def preset_defaults(name):
    return ", ".join(f"{preset} {values[name]}" for preset, values in PRESET_TRAINING.items())


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_config_file(path):
    """The options in a --config file: a JSON object of options, or a run's config.json."""
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file.")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path}: not valid JSON ({error}).") from None
    if not isinstance(loaded, dict):
        raise ValueError(
            f"--config {path}: expected a JSON object of options, received a {type(loaded).__name__}."
        )
    options = loaded.get("options", loaded)  # a run's config.json nests them
    if not isinstance(options, dict) or not isinstance(options.get("model", {}), dict):
        raise ValueError(f"--config {path}: 'options' and 'model' must be JSON objects.")
    return options


def options_from_args(argv=None):
    args = build_parser().parse_args(argv)
    values = read_config_file(args.config) if args.config else {}
    flags = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key not in ("config", "set", "verbose")
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


# Exit codes: 0 done (or nothing to do), 2 bad options or data, 3 a file the job could not
# read or write, 4 the run folder is in use, 130 interrupted (Ctrl-C).
EXIT_BAD_INPUT, EXIT_FILE_SYSTEM, EXIT_FOLDER_IN_USE, EXIT_INTERRUPTED = 2, 3, 4, 130


def main(argv=None, started=None):
    """`started`: when the job began, for its log times and --time-budget (default now)."""
    try:
        options = options_from_args(argv)
        run(options, started=started)
    except RunFinished as finished:
        print(finished)
        return 0
    except RunInUse as error:
        return fail(f"error: {error}", EXIT_FOLDER_IN_USE)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        kind = "data error" if isinstance(error, DataError) else "error"
        return fail(f"{kind}: {error}", EXIT_BAD_INPUT)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return fail(f"error: cannot use {where}{error.strerror or error}", EXIT_FILE_SYSTEM)
    except TrainingInterrupted as interrupted:
        return fail(f"\ninterrupted: {interrupted}", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        return fail("\ninterrupted before training started; the run folder is as it was.", EXIT_INTERRUPTED)
    return 0


def fail(message, code):
    print(message, file=sys.stderr)
    return code
