"""Long text: vanilla segments vs Transformer-XL memory, same model size and training steps.

Trains two `python train.py --task lm` models on the same text: vanilla (absolute sinusoidal
positions, no memory) and Transformer-XL (`position=transformer_xl`, `memory_length` = the
segment length). Then scores the same held-out text: the vanilla model per segment and by
sliding window, the XL model with its memory (and, for reference, the other procedures that
apply to it). Perplexity and evaluation time of each, from the runs' metrics.json.

    python benchmarks/long_context.py [--data builtin:counting] [--steps 846] [--preset tiny]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def train(folder, name, args, extra):
    output = os.path.join(folder, name)
    command = [
        sys.executable, os.path.join(ROOT, "train.py"), "--task", "lm", "--output", output,
        "--data", args.data, "--preset", args.preset, "--steps", str(args.steps), "--epochs",
        "1000", "--seed", str(args.seed), "--eval-every", str(args.steps), *extra,
    ]
    if args.test_data:
        command += ["--test-data", args.test_data]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    print(f"  {name}: {metrics['seconds']:.0f} s, {metrics['tokens_per_sec']:.0f} tokens/s", flush=True)
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:counting")
    parser.add_argument("--test-data")
    parser.add_argument("--steps", type=int, default=846)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from benchmarks.common import machine

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        vanilla = train(folder, "vanilla", args, ["--set", "position=sinusoidal"])
        segment = json.load(open(os.path.join(folder, "vanilla", "config.json")))["model"]["max_length"]
        xl = train(
            folder, "transformer_xl", args,
            ["--set", "position=transformer_xl", "--set", f"memory_length={segment}"],
        )
    print(f"\n{args.data}, preset {args.preset}, segments of {segment} tokens, {args.steps} "
          f"training steps each; {vanilla['test_tokens']} held-out tokens scored\n")
    print("| model | evaluation | test perplexity | evaluation time (s) | training tokens/s |")
    print("|---|---|---|---|---|")
    rows = [
        ("vanilla", vanilla, "per_segment"),
        ("vanilla", vanilla, "sliding_window"),
        (f"Transformer-XL (memory {segment})", xl, "with_memory"),
        (f"Transformer-XL (memory {segment})", xl, "per_segment"),
        (f"Transformer-XL (memory {segment})", xl, "sliding_window"),
    ]
    for name, metrics, procedure in rows:
        print(f"| {name} | {procedure.replace('_', ' ')} | "
              f"{metrics[f'test_perplexity_{procedure}']:.3f} | "
              f"{metrics[f'test_seconds_{procedure}']:.1f} | {metrics['tokens_per_sec']:.0f} |")


if __name__ == "__main__":
    main()
