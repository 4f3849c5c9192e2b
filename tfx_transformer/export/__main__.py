"""`python -m tfx_transformer.export --run DIR`: export a finished training run for TF Serving."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tfx_transformer.export import export_run  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfx_transformer.export",
        description="Export a training run as a SavedModel for TF Serving: RUN/export/<version>/.",
    )
    parser.add_argument("--run", required=True, help="the training run's --output folder")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--max-length", type=int, help="longest translation in tokens")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the decode loop")
    args = parser.parse_args(argv)
    try:
        path = export_run(
            args.run,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            max_length=args.max_length,
            jit_compile=args.jit_compile,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
