"""`python -m tfx_transformer.translate --run DIR`: translate a file (or stdin) with a trained run.

One input line, one output line, in the input's order (batches are sorted by length inside);
`--nbest N` writes N lines per input, best first; `--sample` draws instead of searching;
`--score TARGETS` writes each target's log-probability given the source line. `--with-scores`
prefixes each output with its score and a tab. Every input line is checked before anything is
translated: invalid UTF-8, and (with `--long-lines refuse`) a line over the model's length, are
named by line number; lines cut to the model's length (the default) are named in a warning. An
output file is written beside its place and renamed into it.

Exit codes: 0 done, 2 bad input or options (named), 3 a file that cannot be read or written.
"""

import argparse
import os
import sys
import time

from tfx_transformer.data import DataError, decode_lines, read_lines
from tfx_transformer.data.readers import UTF8_BOM
from tfx_transformer.decoding import DEFAULT_MAX_LENGTH_FACTOR
from tfx_transformer.files import write_text_atomic
from tfx_transformer.tasks.translation.translator import LONG_INPUTS, InputTooLong, Translator


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfx_transformer.translate",
        description="Translate text, one sentence per line, with a trained translation run.",
    )
    add = parser.add_argument
    add("--run", required=True, help="the training run's folder (model.keras, tokenizer/)")
    add("--input", default="-", help="text file, one sentence per line (default -: stdin)")
    add("--output", default="-", help="where the translations go (default -: stdout)")
    add("--beam-size", type=int, default=4, help="(default 4; 1: greedy)")
    add("--length-penalty", type=float, default=0.6, help="GNMT alpha (default 0.6)")
    add("--max-length", type=int, help="longest translation in tokens (default: the model's)")
    add("--max-length-factor", type=float, default=DEFAULT_MAX_LENGTH_FACTOR,
        help="a translation also ends at this many times its source's tokens "
        f"(default {DEFAULT_MAX_LENGTH_FACTOR}; 0: at --max-length only)")
    add("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    add("--long-lines", choices=LONG_INPUTS, default="truncate",
        help="lines over the model's length: cut to it (default), or refuse the file")
    add("--nbest", type=int, default=1, help="translations per line, best first (default 1)")
    add("--sample", action="store_true", help="sample translations instead of searching")
    add("--temperature", type=float, default=1.0, help="with --sample (default 1.0)")
    add("--top-k", type=int, default=0, help="with --sample: the k most likely tokens (default 0: all)")
    add("--top-p", type=float, default=1.0, help="with --sample: nucleus mass (default 1.0)")
    add("--seed", type=int, default=0, help="with --sample (default 0)")
    add("--score", metavar="TARGETS", help="score these translations (one per input line) instead")
    add("--with-scores", action="store_true", help="prefix each output line with its score")
    return parser


def read_text(path):
    """Lines of a file, or of stdin for "-", as strings, without a leading byte order mark;
    invalid UTF-8 named by line."""
    if path != "-":
        return [] if os.path.isfile(path) and os.path.getsize(path) == 0 else read_lines(path)
    text = sys.stdin.buffer.read().removeprefix(UTF8_BOM)
    return decode_lines(text.splitlines(), "<stdin>")


def output_lines(translator, args, lines, targets=None):
    if targets is not None:
        scored = translator.score(lines, targets)
        return [f"{total:.4f}\t{target}" for (total, _), target in zip(scored, targets)]
    if args.sample:
        results = [[pair] for pair in translator.sample(
            lines, args.temperature, args.top_k, args.top_p, args.seed
        )]
    elif args.nbest > 1:
        results = translator.nbest(lines, args.nbest)
    else:
        results = [[pair] for pair in translator.translate_with_scores(lines)]
    return [
        f"{score:.4f}\t{text}" if args.with_scores else text
        for hypotheses in results
        for text, score in hypotheses
    ]


def name_of(path):
    return "<stdin>" if path == "-" else path


def check_lengths(translator, long_lines, lines, name):
    """Lines over the model's length, found before anything is translated: with --long-lines
    refuse the first is named; otherwise a warning names them, since their ends go untranslated."""
    long = translator.too_long(lines)
    if not long:
        return
    limit = translator.max_input_length
    if long_lines == "refuse":
        index, tokens = long[0]
        raise DataError(f"{name}:{index + 1}: {InputTooLong(index, tokens, limit)}")
    numbers = ", ".join(str(index + 1) for index, _ in long[:5]) + (", ..." if len(long) > 5 else "")
    print(f"warning: {len(long)} line(s) of {name} have more than the model's {limit} tokens and "
          f"are cut to them, their ends untranslated (lines {numbers}); --long-lines refuse "
          "stops instead.", file=sys.stderr)


def translate_all(translator, args, lines, targets):
    """Output lines, a chunk of inputs at a time so that a terminal shows progress."""
    chunk = args.batch_size * 8
    shown = sys.stderr.isatty() and len(lines) > chunk
    started, out = time.time(), []
    for start in range(0, len(lines), chunk):
        part = None if targets is None else targets[start : start + chunk]
        out.extend(output_lines(translator, args, lines[start : start + chunk], part))
        if shown:
            done = min(start + chunk, len(lines))
            rate = done / max(time.time() - started, 1e-9)
            print(f"\r{done}/{len(lines)} lines, {rate:.1f}/s", end="", file=sys.stderr, flush=True)
    if shown:
        print(file=sys.stderr)
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.nbest < 1 or (args.nbest > 1 and (args.sample or args.score)):
            raise ValueError("--nbest takes a positive number, and goes with beam search only.")
        lines = read_text(args.input)
        targets = None
        if args.score:
            targets = read_text(args.score)
            if len(targets) != len(lines):
                raise DataError(f"{args.score} has {len(targets)} lines but the input has {len(lines)}.")
        translator = Translator.from_run(
            args.run, beam_size=args.beam_size, length_penalty=args.length_penalty,
            max_length=args.max_length, batch_size=args.batch_size, long_inputs=args.long_lines,
            max_length_factor=args.max_length_factor or None,
        )
        check_lengths(translator, args.long_lines, lines, name_of(args.input))
        if targets is not None:
            check_lengths(translator, args.long_lines, targets, args.score)
        text = "".join(line.replace("\n", " ") + "\n" for line in translate_all(translator, args, lines, targets))
        if args.output == "-":
            sys.stdout.write(text)
        else:
            write_text_atomic(args.output, text)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot use {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted; no output was written.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
