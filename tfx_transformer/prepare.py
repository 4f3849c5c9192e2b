"""`python -m tfx_transformer.prepare --data SPEC --output DIR`: a parallel corpus of any size as
sharded token ids, for `python train.py --data prepared:DIR` (see
`tfx_transformer.tasks.translation.prepare`). `--show DIR` prints a prepared set's manifest."""

import argparse
import sys

from tfx_transformer.data import DataError
from tfx_transformer.data.shards import describe_manifest, read_manifest
from tfx_transformer.tasks.translation.prepare import PrepareOptions, prepare


def parse(argv):
    defaults = PrepareOptions(data="", output="")
    parser = argparse.ArgumentParser(
        prog="python -m tfx_transformer.prepare",
        description="Encode a parallel corpus for `train.py --data prepared:DIR`: a tokenizer "
        "trained on a sample (or --tokenizer), token ids in gzip'd shards written by worker "
        "processes, held-out validation pairs and a manifest. Memory does not grow with the "
        "corpus; an interrupted preparation resumes when run again with the same arguments.",
    )
    add = parser.add_argument
    add("--data", help="parallel:SRC,TGT (two aligned line files) or tsv:PATH; plain or .gz")
    add("--output", help="the folder to write (new, or an unfinished preparation to resume)")
    add("--show", metavar="DIR", help="print the manifest of a prepared folder and exit")
    add("--tokenizer", help="a folder holding sentencepiece.model (e.g. a run's tokenizer/) to "
        "encode with, instead of training one")
    add("--vocab-size", type=int, default=defaults.vocab_size,
        help=f"the trained tokenizer's vocabulary bound (default {defaults.vocab_size})")
    add("--tokenizer-sample", type=int, default=defaults.tokenizer_sample,
        help=f"pairs drawn at random to train it on (default {defaults.tokenizer_sample:,})")
    add("--shard-size", type=int, default=defaults.shard_size,
        help=f"input lines per shard (default {defaults.shard_size:,}); a cluster's workers "
        "each read shards of their own, so have at least as many shards as workers")
    add("--validation", type=int, default=defaults.validation,
        help=f"pairs held out for validation (default {defaults.validation}; at most a tenth)")
    add("--processes", type=int, default=defaults.processes,
        help="worker processes that encode shards (default: one per CPU)")
    add("--seed", type=int, default=defaults.seed)
    add("--allow-misaligned", action="store_true",
        help="prepare parallel text that looks misaligned (by default refused, naming where)")
    args = parser.parse_args(argv)
    if args.show is None and (args.data is None or args.output is None):
        parser.error("--data and --output are required (or --show DIR)")
    return args


def main(argv=None):
    args = parse(argv)
    try:
        if args.show is not None:
            print(describe_manifest(read_manifest(args.show)))
            return 0
        options = PrepareOptions(**{k: v for k, v in vars(args).items() if k != "show"})
        manifest = prepare(options)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the finished shards are kept; run the same command again to "
              "resume.", file=sys.stderr)
        return 130
    print(describe_manifest(manifest))
    print(f"train with: python train.py --data prepared:{options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
