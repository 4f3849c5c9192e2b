"""Corpora beyond memory: preparation throughput, peak memory and seconds to the first training
step, for generated corpora of growing size, against today's in-memory path (`--data
parallel:SRC,TGT`, read and encoded whole by train.py) on the same files.

    python benchmarks/data_scale.py [--sizes 100000 1000000 10000000] [--work /tmp/data_scale]
        [--in-memory-up-to 1000000] [--processes 0]

The corpus (written once per size into --work, deterministic from --seed): random words of a
Zipf-distributed 30,000-word vocabulary, source lengths log-normal around 17 words (1-150),
targets 1.1x their source's length with 15% spread: about 14 MB a side per 100,000 pairs.

Each measurement is a process of its own, its memory the peak of the summed resident memory of
it and its children (sampled every 0.1 s):
- in-memory: `train.py --data parallel:SRC,TGT --steps 3` (skipped above --in-memory-up-to: at
  10M pairs it needs more memory than this machine has);
- prepare: `python -m tfx_transformer.prepare` (tokenizer trained on its default sample);
- streamed: `train.py --data prepared:DIR --steps 3`.
Both training runs use the tiny preset, no export and a 50-pair validation file, so that the
figures are those of the data path. Prints a table and the ratios against the targets: training
peak at the largest size within 1.2x of the smallest's, preparation at least 2x the in-memory
path's pairs per second (reading, tokenizer and encoding until the first step), first step
within 30 s on the largest prepared corpus.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIRST_STEP = re.compile(r"\[\s*([\d.]+)s\] step 1/")
ENCODED = re.compile(r"encoded [\d,]+ pairs in [\d.]+ s \(([\d,]+) pairs/s\)")
# Today's in-process encoding, timed without its imports: what train.py does with parallel files
# before batching them (read, check alignment, encode with the given tokenizer).
ENCODE_IN_PROCESS = """
import sys, time
from tfx_transformer.data import Tokenizer
from tfx_transformer.tasks.translation import data
tokenizer = Tokenizer.load(sys.argv[1])
started = time.time()
text = data.read_parallel(sys.argv[2], sys.argv[3])
encoded = data.encode_pairs(tokenizer, text, 256)
print("pairs/s", len(text) / (time.time() - started))
"""
TRAIN_FLAGS = ["--preset", "tiny", "--steps", "3", "--no-export", "--eval-examples", "8",
               "--beam-size", "1", "--average-last", "0"]


def generate(source_path, target_path, pairs, seed, words=30_000, block=10_000):
    """Writes `pairs` generated pairs (see the module's description), atomically per file."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = np.array(["".join(rng.choice(letters, size=rng.integers(2, 10)))
                           for _ in range(words)])
    zipf = 1.0 / np.arange(1, words + 1) ** 1.1
    zipf /= zipf.sum()
    temporary = [source_path + ".tmp", target_path + ".tmp"]
    with open(temporary[0], "w") as source, open(temporary[1], "w") as target:
        for start in range(0, pairs, block):
            count = min(block, pairs - start)
            source_lengths = np.clip(rng.lognormal(np.log(17), 0.5, count).round(), 1, 150).astype(int)
            target_lengths = np.clip((source_lengths * rng.normal(1.1, 0.15, count)).round(), 1, 170).astype(int)
            for lengths, out in ((source_lengths, source), (target_lengths, target)):
                ids = rng.choice(words, size=int(lengths.sum()), p=zipf)
                lines = np.split(vocabulary[ids], np.cumsum(lengths)[:-1])
                out.write("\n".join(" ".join(line) for line in lines) + "\n")
    os.replace(temporary[0], source_path)
    os.replace(temporary[1], target_path)


def corpus(work, pairs, seed):
    folder = os.path.join(work, f"corpus-{pairs}")
    paths = os.path.join(folder, "train.src"), os.path.join(folder, "train.tgt")
    if not all(os.path.exists(p) for p in paths):
        os.makedirs(folder, exist_ok=True)
        started = time.time()
        generate(*paths, pairs, seed)
        print(f"generated {pairs:,} pairs in {time.time() - started:.0f} s", flush=True)
    return paths


def tree_rss(process):
    import psutil

    total = 0
    try:
        members = [process] + process.children(recursive=True)
    except psutil.Error:  # a child ended while they were listed
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def measured(command, log_path):
    """Runs `command`; returns (seconds, peak resident bytes of it and its children, output)."""
    import psutil

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        watched, peak = psutil.Process(child.pid), [0]

        def sample():
            while child.poll() is None:
                peak[0] = max(peak[0], tree_rss(watched))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        child.wait()
        sampler.join()
    seconds = time.time() - started
    with open(log_path) as f:
        output = f.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return seconds, peak[0], output


def first_step(output):
    found = FIRST_STEP.search(output)
    return float(found.group(1)) if found else float("nan")


def measure_size(args, pairs, valid_spec):
    source, target = corpus(args.work, pairs, args.seed)
    row = {"pairs": pairs}
    logs = os.path.join(args.work, "logs")
    os.makedirs(logs, exist_ok=True)
    if pairs <= args.in_memory_up_to:
        output = os.path.join(args.work, f"run-memory-{pairs}")
        shutil.rmtree(output, ignore_errors=True)
        seconds, peak, log = measured(
            [sys.executable, "train.py", "--data", f"parallel:{source},{target}", "--valid-data",
             valid_spec, "--output", output, *TRAIN_FLAGS], os.path.join(logs, f"memory-{pairs}.log"))
        row["memory_first_step"], row["memory_peak"] = first_step(log), peak
    prepared = os.path.join(args.work, f"prepared-{pairs}")
    shutil.rmtree(prepared, ignore_errors=True)
    command = [sys.executable, "-m", "tfx_transformer.prepare", "--data",
               f"parallel:{source},{target}", "--output", prepared]
    if args.processes:
        command += ["--processes", str(args.processes)]
    seconds, peak, log = measured(command, os.path.join(logs, f"prepare-{pairs}.log"))
    row["prepare_seconds"], row["prepare_peak"] = seconds, peak
    row["prepare_encoding"] = float(ENCODED.search(log).group(1).replace(",", ""))
    if pairs <= args.in_memory_up_to:
        _, _, log = measured([sys.executable, "-c", ENCODE_IN_PROCESS,
                              os.path.join(prepared, "tokenizer"), source, target],
                             os.path.join(logs, f"encode-{pairs}.log"))
        row["in_process_encoding"] = float(log.split("pairs/s")[-1])
    output = os.path.join(args.work, f"run-prepared-{pairs}")
    shutil.rmtree(output, ignore_errors=True)
    seconds, peak, log = measured(
        [sys.executable, "train.py", "--data", f"prepared:{prepared}", "--valid-data", valid_spec,
         "--output", output, *TRAIN_FLAGS], os.path.join(logs, f"prepared-{pairs}.log"))
    row["stream_first_step"], row["stream_peak"] = first_step(log), peak
    return row


def report(rows):
    gib = 2.0**30
    print("\n| pairs | in-memory: first step, peak | prepare: s, pairs/s, peak | streamed: first step, peak |")
    print("|---|---|---|---|")
    for row in rows:
        memory = (f"{row['memory_first_step']:.0f} s, {row['memory_peak'] / gib:.2f} GiB"
                  if "memory_peak" in row else "not run (beyond this machine)")
        rate = row["pairs"] / row["prepare_seconds"]
        print(f"| {row['pairs']:,} | {memory} | {row['prepare_seconds']:.0f} s, {rate:,.0f}, "
              f"{row['prepare_peak'] / gib:.2f} GiB | {row['stream_first_step']:.1f} s, "
              f"{row['stream_peak'] / gib:.2f} GiB |")
    smallest, largest = rows[0], rows[-1]
    print(f"\ntraining peak, {largest['pairs']:,} vs {smallest['pairs']:,} pairs: "
          f"{largest['stream_peak'] / smallest['stream_peak']:.2f}x (target at most 1.2x)")
    for row in rows:
        if "memory_peak" in row:
            ours = row["pairs"] / row["prepare_seconds"]
            theirs = row["pairs"] / row["memory_first_step"]
            print(f"preparation at {row['pairs']:,} pairs: {ours:,.0f} pairs/s vs the in-memory "
                  f"path's {theirs:,.0f} until its first step: {ours / theirs:.2f}x (target >= 2x)")
    for row in rows:
        line = f"encoding at {row['pairs']:,} pairs (tokenizer given): prepare {row['prepare_encoding']:,.0f} pairs/s"
        if "in_process_encoding" in row:
            ratio = row["prepare_encoding"] / row["in_process_encoding"]
            line += f", in-process {row['in_process_encoding']:,.0f}: {ratio:.2f}x"
        print(line)
    print(f"first step on {largest['pairs']:,} prepared pairs: {largest['stream_first_step']:.1f} s "
          "(target <= 30 s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--work", default="/tmp/data_scale")
    parser.add_argument("--in-memory-up-to", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    valid = corpus(args.work, 50, args.seed + 1)
    valid_spec = f"parallel:{valid[0]},{valid[1]}"
    rows = []
    for pairs in sorted(args.sizes):
        rows.append(measure_size(args, pairs, valid_spec))
        print(rows[-1], flush=True)
    report(rows)


if __name__ == "__main__":
    main()
