"""The accelerator figures of README's "Speed against peers" and "On JAX", in one command on a
machine with a GPU, JAX, Keras and keras-hub (TensorFlow not needed):

    python benchmarks/accelerator.py --corpus DIR --out DIR [--parts base,big,train]
        [--train-seconds 300] [--bleu 30,35,40] [--deadline SECONDS] [-- extra train.py flags]

- `base`: `gpu_train_step.py`, base dims, 256 x 128 tokens, 10% right padding, the default models
  (keras-hub, ours-paper, ours-paper-packed, ours-paper-mask, ours): the 1.5x and 25% MFU
  targets, what passing padding to cuDNN as key lengths gives (ours-paper against
  ours-paper-mask), and what packed rows' masks cost and their fuller rows give.
- `big`: the same at big dims, 128 x 128, ours-paper and keras-hub (the 40% MFU target).
- `train`: `KERAS_BACKEND=jax python train.py --preset base` with the paper's dropout placement
  (the fused attention path), pairs packed into rows (the default on JAX), on the corpus's parallel files (`train`, `val`,
  `test_2016_flickr` as in Multi30k), for `--train-seconds` of the whole job; reports its target
  tokens per second and the job's seconds until the validation BLEU (on the evaluation sample)
  first reached each of `--bleu`.

`--deadline SECONDS` fits the whole command into that time (a machine lent for minutes): `base`
gets 30% of it and `big` 15% (`gpu_train_step.py --seconds`: fewer rounds, and the models last in
its list skipped where compiling them all would not fit; keras-hub comes first), `train` the
smaller of `--train-seconds` and what is left; each part ends 20 s before the deadline at the
latest (killed if it overruns), and one that would get too little is skipped.

Each part runs in a process of its own and writes its whole output to `OUT/<part>.log` as it goes
(a part cut short still leaves its log); `OUT/summary.json` gathers the figures (rewritten as
each part ends) and
`OUT/train_metrics.json` is the run's metrics.json (the run folder itself, checkpoints and all, is
a temporary one). The parts' own scripts say what each figure means.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED_CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "data", "multi30k-en-fr")
# The peer first: where a budget cuts the models short, the ratios against it still come out.
STEP_PARTS = {
    "base": ["--preset", "base", "--batch", "256", "--length", "128", "--padding", "0.1",
             "--models", "keras-hub,ours-paper,ours-paper-packed,ours-paper-mask,ours"],
    "big": ["--preset", "big", "--batch", "128", "--length", "128", "--models", "keras-hub,ours-paper"],
}
# With --deadline: each step part's share of it; the train part --train-seconds or what the others
# leave. A part ends a margin before the deadline: a process needs it to end, and the summary.
DEADLINE_SHARES = {"base": 0.3, "big": 0.15}
DEADLINE_MARGIN = 20
SHORTEST_PART = {"base": 30, "big": 30, "train": 60}  # below these a part is skipped
# The paper's dropout placement: attention runs fused while training only without attention dropout.
TRAIN_FLAGS = ["--preset", "base", "--set", "attention_dropout=0", "--set", "ffn_dropout=0",
               "--max-length", "64", "--batch-tokens", "8192", "--eval-every", "500",
               "--eval-examples", "500", "--no-export"]
RATE_LINE = re.compile(r"^(\S+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%$")
EVALUATION_LINE = re.compile(r"\[\s*([\d.]+)s\] step (\d+): validation .*?BLEU ([\d.]+)")


def run_logged(command, log_path, environment, timeout=None):
    """Runs `command`, its output copied to `log_path` and to stdout as it comes; returns the text.
    A command still running after `timeout` seconds is killed (what it printed is kept)."""
    lines = []
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        cwd=ROOT,
    ) as process:
        killer = threading.Timer(timeout, process.kill) if timeout else None
        if killer:
            killer.start()
        try:
            for line in process.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                sys.stdout.write(line)
            returncode = process.wait()
        finally:
            if killer:
                killer.cancel()
    if returncode:
        print(f"(exit {returncode}; see {log_path})", flush=True)
    return "".join(lines)


def step_rates(text):
    """{model: {tokens_per_sec, ms_per_step, mfu, mfu_with_output}} from gpu_train_step's table."""
    rates = {}
    for line in text.splitlines():
        match = RATE_LINE.match(line.strip())
        if match:
            name, rate, ms, mfu, mfu_all = match.groups()
            rates[name] = {"tokens_per_sec": float(rate.replace(",", "")), "ms_per_step": float(ms),
                           "mfu": float(mfu) / 100, "mfu_with_output": float(mfu_all) / 100}
    return rates


def training_figures(text, metrics, thresholds):
    """Tokens per second and the final scores (`metrics`: the run's metrics.json, {} if it has
    none), the in-training evaluations, and the job's seconds to each BLEU threshold (None where
    it was not reached)."""
    evaluations = [
        {"seconds": float(seconds), "step": int(step), "bleu": float(bleu)}
        for seconds, step, bleu in EVALUATION_LINE.findall(text)
    ]
    figures = {key: metrics[key] for key in (
        "tokens_per_sec", "steps", "time", "bleu", "test_bleu", "test_chrf") if key in metrics}
    figures["evaluations"] = evaluations
    figures["seconds_to_bleu"] = {
        str(threshold): next((e["seconds"] for e in evaluations if e["bleu"] >= threshold), None)
        for threshold in thresholds
    }
    return figures


def train_command(files, seconds, run_folder, extra):
    data = [f"parallel:{source},{target}" for source, target in zip(files[::2], files[1::2])]
    return [sys.executable, os.path.join(ROOT, "train.py"), *TRAIN_FLAGS,
            "--data", data[0], "--valid-data", data[1], "--test-data", data[2],
            "--time-budget", str(seconds), "--output", run_folder, *extra]


def run_training(command, run_folder, out, thresholds, environment, timeout=None):
    text = run_logged(command, os.path.join(out, "train.log"), environment, timeout)
    metrics, metrics_path = {}, os.path.join(run_folder, "metrics.json")
    if os.path.exists(metrics_path):
        shutil.copyfile(metrics_path, os.path.join(out, "train_metrics.json"))
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
    return training_figures(text, metrics, thresholds)


def part_budget(part, args, ends):
    """The seconds `part` may take under --deadline (None without one): a step part its share of
    the deadline, the train part --train-seconds; either no more than is left, less the margin."""
    if ends is None:
        return None
    wanted = DEADLINE_SHARES[part] * args.deadline if part in STEP_PARTS else args.train_seconds
    return min(wanted, ends - time.monotonic() - DEADLINE_MARGIN)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=SHARED_CORPUS,
                        help="a folder of parallel files SPLIT.SOURCE and SPLIT.TARGET")
    parser.add_argument("--source", default="en")
    parser.add_argument("--target", default="fr")
    parser.add_argument("--splits", default="train,val,test_2016_flickr")
    parser.add_argument("--out", required=True, help="a folder for the logs and summary.json")
    parser.add_argument("--parts", default="base,big,train")
    parser.add_argument("--train-seconds", type=int, default=300)
    parser.add_argument("--bleu", default="30,35,40", help="validation BLEU thresholds")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds the whole command may take (0: no limit): the base and big "
                        "parts get 30%% and 15%% of it, the train part what they leave")
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    parts = args.parts.split(",")
    if set(parts) - {*STEP_PARTS, "train"}:
        parser.error(f"--parts takes names of {[*STEP_PARTS, 'train']}; got {args.parts!r}")
    files = [os.path.join(args.corpus, f"{split}.{language}")
             for split in args.splits.split(",") for language in (args.source, args.target)]
    if "train" in parts and (len(files) != 6 or not all(map(os.path.isfile, files))):
        parser.error(f"--corpus {args.corpus} --splits {args.splits}: needs three splits' files "
                     f"{', '.join(map(os.path.basename, files))}")
    os.makedirs(args.out, exist_ok=True)
    summary = run_parts(parts, args, files, extra)
    print(json.dumps(summary, indent=1))
    return 0


def run_parts(parts, args, files, extra):
    """Runs the parts in order; `summary.json` is rewritten after each, so that a command cut off
    keeps the figures of the parts that ended."""
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}
    thresholds = [float(value) for value in args.bleu.split(",")]
    ends = time.monotonic() + args.deadline if args.deadline else None
    summary = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for part in parts:
        budget = part_budget(part, args, ends)
        timeout = None if budget is None else budget + DEADLINE_MARGIN  # should its own budget fail
        if budget is not None and budget < SHORTEST_PART[part]:
            summary[part] = {"skipped": f"{budget + DEADLINE_MARGIN:.0f} s of --deadline left"}
        elif part in STEP_PARTS:
            command = [sys.executable, os.path.join(HERE, "gpu_train_step.py"), *STEP_PARTS[part]]
            if budget is not None:
                command += ["--seconds", f"{budget:.0f}"]
            text = run_logged(command, os.path.join(args.out, f"{part}.log"), environment, timeout)
            summary[part] = step_rates(text)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                run_folder = os.path.join(scratch, "run")
                seconds = args.train_seconds if budget is None else int(budget)
                command = train_command(files, seconds, run_folder, extra)
                summary[part] = run_training(command, run_folder, args.out, thresholds, environment,
                                             timeout)
        with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    sys.exit(main())
