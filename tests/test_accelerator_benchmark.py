"""benchmarks/accelerator.py: the one command that measures README's accelerator figures. Its
parts run where a GPU is; here, that its training command is one train.py accepts, and that it
reads the figures from the parts' output as they print them."""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from tests import ROOT, benchmark_module
from tfx_transformer.training.cli import options_from_args


@pytest.fixture(scope="module")
def accelerator():
    return benchmark_module("accelerator")


def test_the_training_part_is_a_train_py_command_with_the_papers_dropout_placement(accelerator):
    files = [f"/corpus/{split}.{language}" for split in ("train", "val", "test") for language in ("en", "fr")]
    command = accelerator.train_command(files, 300, "/tmp/run", ["--seed", "7"])
    assert command[1].endswith("train.py")
    options = options_from_args(command[2:])
    assert options.preset == "base" and options.time_budget == 300 and options.seed == 7
    assert options.model["attention_dropout"] == 0 and options.model["ffn_dropout"] == 0
    assert options.data == "parallel:/corpus/train.en,/corpus/train.fr"
    assert options.valid_data == "parallel:/corpus/val.en,/corpus/val.fr"
    assert options.test_data == "parallel:/corpus/test.en,/corpus/test.fr"
    assert options.output == "/tmp/run" and not options.export


def test_seconds_to_each_bleu_come_from_the_first_evaluation_that_reached_it(accelerator):
    log = "\n".join([
        "[  12.0s] step 250/9000: loss 5.1, accuracy 0.2, 80000 tokens/s",
        "",
        "[ 150.2s] step 250: validation loss 3.1, accuracy 0.41, BLEU 12.50, chrF 40.00, length ratio 0.9",
        "",
        "[ 190.7s] step 500: validation loss 2.4, accuracy 0.52, BLEU 31.25, chrF 55.00, length ratio 1.0 (best so far)",
        "",
        "[ 230.9s] step 750: validation loss 2.2, accuracy 0.55, BLEU 36.00, chrF 58.00, length ratio 1.0",
    ])
    figures = accelerator.training_figures(log, {"tokens_per_sec": 90000.0, "test_bleu": 35.5}, [30, 36, 40])
    assert [e["step"] for e in figures["evaluations"]] == [250, 500, 750]
    assert figures["evaluations"][1] == {"seconds": 190.7, "step": 500, "bleu": 31.25}
    assert figures["seconds_to_bleu"] == {"30": 190.7, "36": 230.9, "40": None}
    assert figures["tokens_per_sec"] == 90000.0 and figures["test_bleu"] == 35.5
    json.dumps(figures)  # it goes into summary.json


def test_the_rates_are_read_from_gpu_train_steps_table(accelerator):
    table = "\n".join([
        "model              target tok/s   ms/step   MFU    MFU with output projection",
        "ours                    490,901     66.74  14.0%       19.0%",
        "ours-paper-mask         563,987     58.09  15.5%       21.1%",
        "ours / keras-hub: 1.02x",
    ])
    rates = accelerator.step_rates(table)
    assert set(rates) == {"ours", "ours-paper-mask"}
    assert rates["ours"] == {"tokens_per_sec": 490901.0, "ms_per_step": 66.74, "mfu": 0.14,
                             "mfu_with_output": 0.19}


def test_a_corpus_without_the_three_splits_is_refused_before_anything_runs(accelerator, tmp_path, capsys):
    (tmp_path / "train.en").write_text("a\n")
    with pytest.raises(SystemExit) as stopped:
        accelerator.main(["--corpus", str(tmp_path), "--out", str(tmp_path / "out"), "--parts", "train"])
    assert stopped.value.code == 2
    assert "val.en" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        accelerator.main(["--out", str(tmp_path / "out"), "--parts", "base,huge"])
    assert "huge" in capsys.readouterr().err


def test_a_deadline_shares_the_time_and_skips_what_would_get_too_little(accelerator, tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(accelerator.time, "monotonic", lambda: clock["now"])
    args = argparse.Namespace(deadline=600.0, train_seconds=300, bleu="30", out=str(tmp_path))
    ends = clock["now"] + 600
    assert accelerator.part_budget("base", args, ends) == 180  # 30%
    assert accelerator.part_budget("big", args, ends) == 90
    assert accelerator.part_budget("train", args, ends) == 300  # --train-seconds fits
    clock["now"] += 400  # the step parts took 400 s: the training has what is left, less the margin
    assert accelerator.part_budget("train", args, ends) == 200 - accelerator.DEADLINE_MARGIN
    assert accelerator.part_budget("train", args, None) is None  # no deadline
    # Too little left for any part: each is skipped, and the summary says so.
    args.deadline = 50.0
    summary = accelerator.run_parts(["base", "big", "train"], args, [], [])
    assert all("skipped" in summary[part] for part in ("base", "big", "train"))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_part_that_overruns_is_killed_and_keeps_what_it_printed(accelerator, tmp_path):
    started = time.monotonic()
    command = [sys.executable, "-u", "-c",
               "import time; print('compiled', flush=True); time.sleep(60); print('never')"]
    text = accelerator.run_logged(command, tmp_path / "part.log", None, timeout=3)
    assert time.monotonic() - started < 30
    assert "compiled" in text and "never" not in text
    assert (tmp_path / "part.log").read_text().startswith("compiled")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_step_benchmark_skips_the_models_whose_compilation_would_not_fit(monkeypatch, capsys):
    backend = os.environ.get("KERAS_BACKEND")
    benchmark = benchmark_module("gpu_train_step")
    assert os.environ.get("KERAS_BACKEND") == backend  # its import's setdefault stays its own
    clock = FakeClock()
    monkeypatch.setattr(benchmark.time, "perf_counter", clock)
    compile_seconds = {"keras-hub": 30, "ours-paper": 40, "ours-paper-packed": 40, "ours": 10}

    class Model:
        def __init__(self, name):
            self.name = name

        def count_params(self):
            return 1

    def make_step(model):
        def step(state, *batch):
            if state == "new":  # the first call compiles
                clock.now += compile_seconds[model.name]
            return 0.5, "compiled"
        return step, "new"

    monkeypatch.setattr(benchmark, "build", lambda name, *rest: Model(name))
    monkeypatch.setattr(benchmark, "make_step", make_step)
    args = argparse.Namespace(seconds=120.0, vocab=10, length=4)
    batches = {name: ([], 1) for name in compile_seconds}
    steps = benchmark.compiled_steps(list(compile_seconds), {}, args, batches, clock() + 120)
    # 30 s, then 40 (70 s in); a third compilation, reckoned as long as the longest so far (40),
    # would end 110 s in, inside the last fifth (after 96 s) that the timing rounds keep: skipped,
    # and so is the fourth.
    assert list(steps) == ["keras-hub", "ours-paper"]
    printed = capsys.readouterr().out
    assert "ours-paper-packed: skipped" in printed and "ours: skipped" in printed
    # Without a deadline every model is compiled.
    assert list(benchmark.compiled_steps(list(compile_seconds), {}, args, batches, None)) == list(compile_seconds)


def test_timing_rounds_stop_at_the_deadline_after_the_first(monkeypatch):
    common = benchmark_module("common")
    clock = FakeClock()
    monkeypatch.setattr(common.time, "perf_counter", clock)

    def step():
        clock.now += 1.0

    assert len(common.alternate({"a": step, "b": step}, 10, 1, deadline=clock.now + 5)["a"]) == 3
    assert len(common.alternate({"a": step}, 10, 1, deadline=clock.now - 1)["a"]) == 1
    assert len(common.alternate({"a": step}, 4, 1)["a"]) == 4


TRAINING_STEP_FLOPS_SCRIPT = """
import sys, numpy as np, jax
sys.path.insert(0, "benchmarks")
from gpu_train_step import flops_per_target_token, xla_flops
from tfx_transformer.config import TransformerConfig
from tfx_transformer.runs import RunPaths
from tfx_transformer.training import jax_trainer
from tfx_transformer.training.options import TrainOptions

dims = dict(d_model=128, num_heads=4, d_ff=512, num_encoder_layers=2, num_decoder_layers=3)
config = TransformerConfig(vocab_size=1000, max_length=32, **dims)
options = TrainOptions(output=sys.argv[1])
trainer = jax_trainer.Trainer(options, config, jax_trainer.setup(options), RunPaths(options.output))
rng = np.random.default_rng(0)
batch = trainer._place(tuple(rng.integers(4, 1000, size=(8, 32)).astype("int32") for _ in range(3)))
flops = xla_flops(trainer._train_step, trainer.state, (batch,))
_, counted = flops_per_target_token(dims, 1000, 32, 32)
print("ratio", flops / (8 * 32) / counted)
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_train_pys_jax_step_does_the_arithmetic_the_mfu_counts_and_no_more(tmp_path):
    # The MFU of the step benchmark counts the weights' and attention's FLOPs; the step train.py
    # runs on JAX, counted by XLA, adds only the small elementwise work (norms, softmax, Adam):
    # 1.05x here. A second forward pass in the loss measured 2.09x.
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_STEP_FLOPS_SCRIPT, str(tmp_path)], capture_output=True,
        text=True, timeout=600, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ratio = float(result.stdout.split("ratio")[-1])
    assert 1.0 <= ratio < 1.1, ratio
