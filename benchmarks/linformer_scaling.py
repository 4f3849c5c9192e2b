"""Full self-attention vs Linformer: time and peak memory against n, and the quality cost.

Scaling (default): one encoder self-attention layer (d_model 256, 4 heads, batch 1, float32,
forward in a tf.function) at n = 512 ... 8192, full vs Linformer (k = 256). Each (variant, n)
runs in a fresh process, which reports the median time of `--repeats` calls and its peak
resident memory above what it held before the first call (`ru_maxrss`, so tracing counts too,
a few MiB). Growth is the ratio to the previous n: 4x per doubling is quadratic, 2x linear.

Quality (`--quality`): `python train.py` on the built-in task, full attention vs Linformer
encoder self-attention (`--set linformer_length=K`), same preset and steps; validation and test
exact match and BLEU.

    python benchmarks/linformer_scaling.py [--lengths 512 1024 2048 4096 8192] [--k 256]
    python benchmarks/linformer_scaling.py --quality [--quality-k 16] [--steps 1134]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MEASURE = textwrap.dedent(
    """
    import json, resource, statistics, sys, time
    import numpy as np, tensorflow as tf
    from tfx_transformer.layers import LinformerAttention, MultiHeadAttention
    variant, n, k, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if variant == "full":
        layer = MultiHeadAttention(4, 256)
    else:
        layer = LinformerAttention(4, max_length=n, projected_length=k, d_model=256)
    layer.build((None, None, 256))
    x = tf.constant(np.random.default_rng(0).normal(size=(1, n, 256)).astype("float32"))
    run = tf.function(lambda x: layer(x))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    run(x).numpy()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x).numpy()
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * statistics.median(times), "peak_mib": (peak - before) / 1024}))
    """
)


def measure(variant, n, k, repeats):
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, variant, str(n), str(k), str(repeats)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def scaling(args):
    rows = {}
    for n in args.lengths:
        for variant in ("full", "linformer"):
            rows[variant, n] = measure(variant, n, args.k, args.repeats)
            print(f"  n={n} {variant}: {rows[variant, n]}", flush=True)
    print()
    print(f"| n | full ms | Linformer (k={args.k}) ms | full peak MiB | Linformer peak MiB | "
          "time growth full / Linformer | memory growth full / Linformer |")
    print("|---|---|---|---|---|---|---|")
    for i, n in enumerate(args.lengths):
        full, lin = rows["full", n], rows["linformer", n]
        growth = "" if i == 0 else (
            f"{full['ms'] / rows['full', args.lengths[i - 1]]['ms']:.1f}x / "
            f"{lin['ms'] / rows['linformer', args.lengths[i - 1]]['ms']:.1f}x"
        )
        memory = "" if i == 0 else (
            f"{full['peak_mib'] / max(rows['full', args.lengths[i - 1]]['peak_mib'], 1e-9):.1f}x / "
            f"{lin['peak_mib'] / max(rows['linformer', args.lengths[i - 1]]['peak_mib'], 1e-9):.1f}x"
        )
        print(f"| {n} | {full['ms']:.1f} | {lin['ms']:.1f} | {full['peak_mib']:.0f} | "
              f"{lin['peak_mib']:.0f} | {growth} | {memory} |")


def quality(args):
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, extra in (("full", []), (f"linformer k={args.quality_k}", ["--set", f"linformer_length={args.quality_k}"])):
            output = os.path.join(folder, name.split()[0])
            command = [sys.executable, os.path.join(ROOT, "train.py"), "--output", output,
                       "--no-export", "--steps", str(args.steps), *extra]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(completed.stderr[-3000:])
            with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
                results[name] = json.load(f)
            print(f"  {name}: {results[name]['exact_match']:.4f}", flush=True)
    print()
    print("| encoder self-attention | steps | validation exact match | validation BLEU | "
          "test exact match | seconds |")
    print("|---|---|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['steps']} | {m['exact_match']:.2%} | {m['bleu']:.2f} | "
              f"{m.get('test_exact_match', float('nan')):.2%} | {m['seconds']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quality", action="store_true", help="train full vs Linformer instead")
    parser.add_argument("--quality-k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1134, help="training steps for --quality")
    args = parser.parse_args()
    from benchmarks.common import machine

    print(f"machine: {machine()}")
    quality(args) if args.quality else scaling(args)


if __name__ == "__main__":
    main()
