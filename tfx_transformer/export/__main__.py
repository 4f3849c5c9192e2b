"""`python -m tfx_transformer.export --run DIR`: export a finished training run for TF Serving."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tfx_transformer.data import Tokenizer  # noqa: E402
from tfx_transformer.decoding import DEFAULT_MAX_LENGTH_FACTOR  # noqa: E402
from tfx_transformer.export import export_run, next_version  # noqa: E402
from tfx_transformer.runs import RunPaths  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfx_transformer.export",
        description="Export a training run as a SavedModel for TF Serving: RUN/export/<version>/; "
        "or, with --format ctranslate2, for CTranslate2: RUN/ctranslate2/<version>/.",
    )
    parser.add_argument("--run", required=True, help="the training run's --output folder")
    parser.add_argument("--format", choices=["savedmodel", "ctranslate2"], default="savedmodel")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--max-length", type=int, help="longest translation in tokens")
    parser.add_argument("--max-length-factor", type=float, default=DEFAULT_MAX_LENGTH_FACTOR,
                        help="a translation also ends at this many times its source's tokens "
                        f"(default {DEFAULT_MAX_LENGTH_FACTOR}; 0: at --max-length only)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the decode loop")
    parser.add_argument("--quantization", help="ctranslate2: int8, int8_float32, int16, float16 or "
                        "bfloat16 weights (default: float32)")
    args = parser.parse_args(argv)
    try:
        if args.format == "ctranslate2":
            path = export_run_ctranslate2(args.run, args.quantization)
        else:
            path = export_run(
                args.run,
                beam_size=args.beam_size,
                length_penalty=args.length_penalty,
                max_length=args.max_length,
                jit_compile=args.jit_compile,
                max_length_factor=args.max_length_factor or None,
            )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def export_run_ctranslate2(run_dir, quantization=None):
    """RUN/ctranslate2/<next version>/ from a translation run's model.keras and tokenizer/."""
    try:
        from tfx_transformer.export.ctranslate2 import export_ctranslate2  # the optional extra
    except ImportError:
        raise ValueError("--format ctranslate2 needs the ctranslate2 package: "
                         "pip install 'tfx_transformer[ctranslate2]'.") from None
    paths = RunPaths(run_dir)
    if paths.task_name() != "translation":
        raise ValueError("--format ctranslate2 exports translation runs only.")
    model = paths.trained_model()
    path = os.path.join(paths.ctranslate2, str(next_version(paths.ctranslate2)))
    return export_ctranslate2(model, Tokenizer.load(paths.tokenizer), path, quantization)


if __name__ == "__main__":
    sys.exit(main())
