"""Translation quality on real text at equal time: the common keras-hub recipe against our
documented command, one after the other on this machine and the same corpus.

    python benchmarks/real_text.py [--budget 1200] [--data ../shared/data/multi30k-en-fr]
        [--source en --target fr] [--out /tmp/real_text] [--peer ../shared/peers/multi30k_recipe.py]
        [--skip-peer] [-- extra train.py flags]

The recipe trains for --budget seconds (its SentencePiece model and test decoding come on top);
ours gets `--time-budget` of the same seconds for the whole job: tokenizer, training, in-training
evaluations, the final choice of weights, test decoding and the export. Both are scored with
sacrebleu on the corpus's test split (`test_2016_flickr.*` and `val.*` by default, as in
Multi30k). Prints test BLEU, chrF and length ratio of each and the ratios of ours to the
recipe's, against the targets (1.2x the recipe's BLEU, ahead on chrF).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
BLEU_TARGET = 1.2


def documented_command(data, source, target, splits, budget, output):
    """The command README gives for a corpus of parallel files (plus the budget and folder)."""
    train, valid, test = (
        f"parallel:{data}/{split}.{source},{data}/{split}.{target}" for split in splits
    )
    return [
        sys.executable, os.path.join(ROOT, "train.py"), "--preset", "small",
        "--data", train, "--valid-data", valid, "--test-data", test,
        "--time-budget", str(budget), "--output", output,
    ]


def run_peer(args, out):
    folder = os.path.join(out, "peer")
    command = [sys.executable, args.peer, args.data, args.source, args.target, str(args.budget), folder]
    started = time.time()
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"the recipe failed:\n{completed.stderr[-3000:]}")
    with open(os.path.join(folder, "result.json"), encoding="utf-8") as f:
        result = json.load(f)
    return {
        "bleu": result["bleu"], "chrf": result["chrf"], "length_ratio": None,
        "train_seconds": result["train_seconds"], "job_seconds": time.time() - started,
        "detail": f"{result['epochs']} epochs, {result['parameters']:,} parameters, greedy",
    }


def run_ours(args, out, extra):
    folder = os.path.join(out, "ours")
    # The recipe scores with sacrebleu's default tokenizer (13a), so ours does too: on a target
    # written without spaces, train.py's own choice (zh, char) would not compare like with like.
    command = documented_command(
        args.data, args.source, args.target, args.splits.split(","), args.budget, folder
    ) + ["--bleu-tokenize", "13a"] + extra
    print("ours:", " ".join(command), flush=True)
    log_path = os.path.join(out, "ours.log")
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:  # written as it runs: follow it with tail -f
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    job_seconds = time.time() - started
    if completed.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            sys.exit(f"train.py failed (log in {log_path}):\n{f.read()[-3000:]}")
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    candidates = ", ".join(
        f"{name} {values['bleu']:.2f}" for name, values in metrics["candidates"].items()
    )
    return {
        "bleu": metrics["test_bleu"], "chrf": metrics["test_chrf"],
        "length_ratio": metrics["test_length_ratio"],
        "train_seconds": metrics["time"]["training"], "job_seconds": job_seconds,
        "detail": f"{metrics['steps']} steps, {metrics['weights']} weights (validation BLEU: "
                  f"{candidates})",
        "time": metrics["time"],
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=1200)
    parser.add_argument("--data", default=os.path.join(SHARED, "data", "multi30k-en-fr"))
    parser.add_argument("--source", default="en")
    parser.add_argument("--target", default="fr")
    parser.add_argument("--splits", default="train,val,test_2016_flickr",
                        help="file prefixes of the training, validation and test splits")
    parser.add_argument("--peer", default=os.path.join(SHARED, "peers", "multi30k_recipe.py"))
    parser.add_argument("--out", default="/tmp/real_text")
    parser.add_argument("--skip-peer", action="store_true", help="run ours only")
    args = parser.parse_args(argv)
    for path in (args.data,) + (() if args.skip_peer else (args.peer,)):
        if not os.path.exists(path):
            sys.exit(f"{path} does not exist (the shared corpus and recipe live beside the project).")
    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(os.path.join(args.out, "ours")):
        sys.exit(f"{args.out}/ours exists; choose another --out.")
    from common import machine  # imports TensorFlow: after the checks

    print(f"machine: {machine()}; budget {args.budget:.0f} s; data {args.data} "
          f"({args.source} -> {args.target})", flush=True)
    results = {}
    if not args.skip_peer:
        results["keras-hub recipe"] = run_peer(args, args.out)
        print("recipe:", json.dumps(results["keras-hub recipe"]), flush=True)
    results["tfx_transformer"] = run_ours(args, args.out, extra)
    print(f"\n| system | test BLEU | test chrF | length ratio | training s | whole job s | run |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['length_ratio']:.3f}" if r["length_ratio"] is not None else "n/a"
        print(f"| {name} | {r['bleu']:.2f} | {r['chrf']:.2f} | {ratio} | {r['train_seconds']:.0f} | "
              f"{r['job_seconds']:.0f} | {r['detail']} |")
    ours = results["tfx_transformer"]
    print(f"\nours: time {json.dumps(ours['time'])}")
    if "keras-hub recipe" in results:
        peer = results["keras-hub recipe"]
        bleu_ratio = ours["bleu"] / max(peer["bleu"], 1e-9)
        print(f"BLEU ratio {bleu_ratio:.2f}x (target {BLEU_TARGET}x: "
              f"{'met' if bleu_ratio >= BLEU_TARGET else 'NOT met'}); chrF {ours['chrf'] - peer['chrf']:+.2f} "
              f"({'ahead' if ours['chrf'] > peer['chrf'] else 'NOT ahead'}); whole job within budget: "
              f"{'yes' if ours['job_seconds'] <= args.budget else 'NO'}")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
