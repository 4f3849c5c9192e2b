"""Beam size and length penalty against quality and speed, on a finished translation run.

    python benchmarks/beam_settings.py --run DIR [--data SPEC] [--settings 1:0.6,4:0.6,4:1.0,8:0.6]

Decodes the run's validation data (or --data, any data spec) with each beam size and GNMT
length penalty (alpha) and prints BLEU, chrF, length ratio and sentences per second, so that the
export's settings can be chosen on validation, not on the test set.
"""

import argparse
import time

from common import machine

from tfx_transformer.runs import RunPaths  # noqa: E402
from tfx_transformer.tasks.translation import data as data_lib  # noqa: E402
from tfx_transformer.tasks.translation.metrics import score_translations  # noqa: E402
from tfx_transformer.tasks.translation.translator import Translator  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished translation run's folder")
    parser.add_argument("--data", help="data spec to decode (default: the run's --valid-data)")
    parser.add_argument("--settings", default="1:0.6,4:0.6,4:1.0,8:0.6",
                        help="comma-separated BEAM:ALPHA pairs")
    args = parser.parse_args(argv)
    options = RunPaths(args.run).saved_config()["options"]
    spec = args.data or options["valid_data"]
    if not spec:
        parser.error("the run held its validation pairs out of --data; name them with --data")
    text = data_lib.load_spec(spec, "validation", options["seed"])
    print(f"machine: {machine()}; {len(text)} pairs from {spec}")
    print("| beam | alpha | BLEU | chrF | length ratio | sentences/s |")
    print("|---|---|---|---|---|---|")
    translator = None
    for setting in args.settings.split(","):
        beam, alpha = setting.split(":")
        if translator is None:
            translator = Translator.from_run(args.run, beam_size=int(beam), length_penalty=float(alpha))
        else:  # the same model, another setting (one load)
            translator = Translator(translator.model, translator.tokenizer, int(beam), float(alpha))
        translator.translate(text.sources[:64])  # traces the decoding function once
        started = time.perf_counter()
        hypotheses = translator.translate(text.sources)
        seconds = time.perf_counter() - started
        scores = score_translations(hypotheses, text.targets)
        print(f"| {beam} | {alpha} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | "
              f"{scores['length_ratio']:.3f} | {len(text) / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
