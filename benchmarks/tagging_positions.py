"""Entity F1 of absolute sinusoidal vs Shaw vs TENER positions on the built-in tagging set.

Each variant trains `python train.py --task tagging` with the same preset, data and steps, for
several seeds; the table gives the test-set entity F1 (mean, sample standard deviation, range)
and the validation F1. Runs are interleaved by seed, so machine noise hits every variant alike.

    python benchmarks/tagging_positions.py [--steps 400] [--seeds 0 1 2] [--preset tiny]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine  # noqa: E402

VARIANTS = {"sinusoidal": [], "shaw": [], "tener": []}


def train_once(folder, position, seed, args):
    output = os.path.join(folder, f"{position}-{seed}")
    command = [
        sys.executable, os.path.join(ROOT, "train.py"), "--task", "tagging", "--output", output,
        "--preset", args.preset, "--steps", str(args.steps), "--epochs", "1000", "--seed", str(seed),
        "--set", f"position={position}", "--no-export", "--eval-every", str(args.steps),
        "--checkpoint-every", str(args.steps),
    ]
    started = time.time()
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    metrics["wall_seconds"] = time.time() - started
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"preset {args.preset}, {args.steps} steps, seeds {args.seeds}, builtin:entities")
    results = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for position in VARIANTS:
                metrics = train_once(folder, position, seed, args)
                results[position].append(metrics)
                print(
                    f"  seed {seed} {position:>10}: test F1 {metrics['test_f1']:.4f}, validation F1 "
                    f"{metrics['f1']:.4f}, {metrics['wall_seconds']:.0f} s",
                    flush=True,
                )
    print()
    print("| position | test entity F1 (mean ± sd) | min - max | validation F1 (mean) | s/run |")
    print("|---|---|---|---|---|")
    for position, runs in results.items():
        test = [100 * r["test_f1"] for r in runs]
        valid = [100 * r["f1"] for r in runs]
        spread = statistics.stdev(test) if len(test) > 1 else 0.0
        seconds = statistics.mean(r["wall_seconds"] for r in runs)
        print(
            f"| {position} | {statistics.mean(test):.2f} ± {spread:.2f} | {min(test):.2f} - "
            f"{max(test):.2f} | {statistics.mean(valid):.2f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
