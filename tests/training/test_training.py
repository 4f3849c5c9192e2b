"""The training job end to end: the CLI on a tiny preset, its outputs, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests import ROOT

TINY = [
    "--preset", "tiny",
    "--set", "d_model=32", "--set", "d_ff=64", "--set", "num_heads=2",
    "--set", "num_encoder_layers=1", "--set", "num_decoder_layers=1",
    "--batch-tokens", "512", "--eval-examples", "16", "--log-every", "2",
]


def numbers_tsv(path, count=300, offset=0):
    from num2words import num2words

    lines = [f"{num2words(n)}\t{num2words(n, lang='fr')}" for n in range(offset, offset + count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(args, env=None, timeout=600, check=True):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def event_tags(folder):
    import tensorflow as tf

    tags = {}
    for path in Path(folder).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or "scalars"
                tags.setdefault(value.tag, set()).add(plugin)
    return tags


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    data = numbers_tsv(folder / "train.tsv", 400)
    output = folder / "out"
    result = train(["--output", str(output), "--data", f"tsv:{data}", "--steps", "12", *TINY, "--no-export"])
    return output, result


@pytest.mark.slow
def test_cli_writes_the_documented_layout(finished_run):
    output, result = finished_run
    for name in ("config.json", "tokenizer/sentencepiece.model", "model.keras", "metrics.json"):
        assert (output / name).exists(), name
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("bleu", "chrf", "exact_match", "loss", "steps", "tokens_per_sec"):
        assert key in metrics
    assert metrics["steps"] == 12 and metrics["tokens_per_sec"] > 0
    config = json.loads((output / "config.json").read_text())
    assert config["options"]["steps"] == 12 and config["model"]["d_model"] == 32
    assert "done: 12 steps" in result.stdout and "sample translations" in result.stdout


@pytest.mark.slow
def test_event_files_hold_the_promised_summaries(finished_run):
    output, _ = finished_run
    train_tags = event_tags(output / "logs" / "train")
    for tag in ("loss", "accuracy", "learning_rate", "tokens_per_sec"):
        assert tag in train_tags, (tag, train_tags)
    assert any("hparams" in plugins for plugins in train_tags.values())
    valid_tags = event_tags(output / "logs" / "validation")
    for tag in ("loss", "accuracy", "bleu", "chrf", "exact_match"):
        assert tag in valid_tags, (tag, valid_tags)
    assert "text" in valid_tags["samples"]
    assert "images" in valid_tags["cross_attention"]


@pytest.mark.slow
def test_saved_model_file_reloads_in_a_fresh_process(finished_run, tmp_path):
    output, _ = finished_run
    source = np.array([[5, 6, 7, 3, 0]])
    target = np.array([[2, 8, 9]])
    np.savez(tmp_path / "in.npz", source=source, target=target)
    code = (
        "import sys, numpy as np, keras, tfx_transformer\n"
        "m = keras.models.load_model(sys.argv[1]); d = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], np.asarray(m({'source_ids': d['source'], 'target_ids': d['target']})))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(output / "model.keras"), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npy")],
        check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    import tfx_transformer  # noqa: F401

    here = keras.models.load_model(output / "model.keras")
    expected = np.asarray(here({"source_ids": source, "target_ids": target}))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_second_run_never_overwrites_the_first(finished_run):
    output, _ = finished_run
    before = (output / "metrics.json").read_bytes()
    result = train(["--output", str(output), "--steps", "2", *TINY], check=False)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--resume" in result.stderr
    assert (output / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"one\tun\ntwo deux\n", "data.tsv:2: no tab"),
        (b"one\tun\n\xff\xfe\tdeux\n", "data.tsv:2: invalid UTF-8"),
    ],
)
def test_bad_data_fails_before_training_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "data.tsv"
    if content is not None:
        path.write_bytes(content)
    result = train(["--output", str(tmp_path / "out"), "--data", f"tsv:{path}", *TINY], check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_parallel_files_of_different_lengths_fail_early(tmp_path):
    (tmp_path / "s.txt").write_text("one\ntwo\n")
    (tmp_path / "t.txt").write_text("un\n")
    result = train(
        ["--output", str(tmp_path / "out"), "--data", f"parallel:{tmp_path}/s.txt,{tmp_path}/t.txt"],
        check=False,
    )
    assert result.returncode == 2 and "has 2 lines but" in result.stderr


def test_shifted_parallel_files_are_refused_before_training_unless_allowed(tmp_path):
    from tests.data.test_alignment import corpus

    sources, targets = corpus(300)
    targets = targets[:120] + targets[121:] + ["une ligne de plus"]  # a line lost, one added
    (tmp_path / "s.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("\n".join(targets) + "\n", encoding="utf-8")
    args = ["--data", f"parallel:{tmp_path}/s.txt,{tmp_path}/t.txt", *TINY, "--steps", "2",
            "--no-export", "--eval-examples", "8"]
    refused = train(["--output", str(tmp_path / "refused"), *args], check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "misaligned from line 12" in refused.stderr and "--allow-misaligned" in refused.stderr
    assert not (tmp_path / "refused").exists()
    allowed = train(["--output", str(tmp_path / "allowed"), *args, "--allow-misaligned"])
    assert "training anyway (--allow-misaligned)" in allowed.stdout and "done: 2 steps" in allowed.stdout


def test_help_documents_the_contract_flags():
    result = train(["--help"])
    for flag in ("--output", "--preset", "--data", "--valid-data", "--epochs", "--steps",
                 "--batch-tokens", "--strategy", "--mixed-precision", "--resume", "--config"):
        assert flag in result.stdout


@pytest.mark.slow
def test_sigkill_then_resume_continues_to_the_same_total(tmp_path):
    data = numbers_tsv(tmp_path / "train.tsv", 400)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"tsv:{data}", "--steps", "40",
            "--checkpoint-every", "5", *TINY, "--no-export"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    deadline = time.time() + 300
    checkpoints = output / "checkpoints"
    while time.time() < deadline:
        index = checkpoints / "checkpoint"
        if index.exists() and "ckpt-10" in index.read_text():
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("no checkpoint appeared")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "metrics.json").exists()
    import tensorflow as tf

    saved_step = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
    assert 10 <= saved_step < 40

    # The killed process left its claim on the folder: a new run is refused with how to go on,
    # --resume takes the claim over (as a cluster manager's restart needs).
    assert (output / ".lock").exists()
    refused = train(args, check=False)
    assert refused.returncode == 4 and "no longer running" in refused.stderr
    assert "--resume" in refused.stderr
    result = train([*args, "--resume"])
    assert "no longer running; resuming in its place" in result.stdout
    assert f"resuming from step {saved_step}" in result.stdout
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 40
    json.loads((output / "config.json").read_text())
    keras.models.load_model(output / "model.keras")


def test_resume_needs_a_run_and_the_same_options(tmp_path):
    result = train(["--output", str(tmp_path / "none"), "--resume", *TINY], check=False)
    assert result.returncode == 2 and "no run to resume" in result.stderr


def test_the_default_epochs_make_twice_the_warm_up_steps_on_a_small_corpus():
    from tfx_transformer.training.options import UNBOUNDED_EPOCHS, TrainOptions

    options = TrainOptions()  # translation: 6 epochs, 400 warm-up steps
    assert options.planned_epochs(steps_per_epoch=134) == 6  # 804 steps
    assert options.planned_epochs(steps_per_epoch=133) == 7  # 6 would be 798
    assert options.planned_epochs(steps_per_epoch=25) == 32  # 800 steps
    assert TrainOptions(warmup_steps=100).planned_epochs(steps_per_epoch=25) == 8
    assert TrainOptions(task="tagging").planned_epochs(steps_per_epoch=39) == 21  # 819 steps
    assert TrainOptions(epochs=3).planned_epochs(steps_per_epoch=25) == 3  # as asked
    assert TrainOptions(steps=10).planned_epochs(steps_per_epoch=25) == UNBOUNDED_EPOCHS


def test_evaluations_come_every_epoch_but_not_under_a_hundred_steps_apart():
    from tfx_transformer.training.options import TrainOptions

    options = TrainOptions()
    assert options.evaluation_interval(steps_per_epoch=172) == 172  # the built-in set's epoch
    assert options.evaluation_interval(steps_per_epoch=100) == 100
    assert options.evaluation_interval(steps_per_epoch=99) == 198
    assert options.evaluation_interval(steps_per_epoch=25) == 100  # every fourth epoch
    assert options.evaluation_interval(steps_per_epoch=39) == 117
    assert TrainOptions(eval_every=7).evaluation_interval(steps_per_epoch=25) == 7  # as asked


def test_options_take_the_tasks_defaults_and_refuse_bad_values():
    from tfx_transformer.training.options import TrainOptions

    defaults = {task: TrainOptions(task=task) for task in ("translation", "tagging", "lm")}
    assert [defaults[t].data for t in defaults] == ["builtin:numbers", "builtin:entities", "builtin:counting"]
    assert [defaults[t].planned_epochs(steps_per_epoch=1000) for t in defaults] == [6, 20, 6]
    assert [defaults[t].label_smoothing for t in defaults] == [0.1, 0.1, 0.0]
    assert TrainOptions(task="lm", label_smoothing=0.2, epochs=2).label_smoothing == 0.2
    for values, message in [
        ({"task": "summarize"}, "--task must be one of"),
        ({"model": {"vocab_size": 100}}, "--vocab-size instead"),
        ({"word_dropout": 1.0}, "--word-dropout"),
        ({"label_smoothing": -0.1}, "--label-smoothing"),
        ({"model": {"position": "rope"}}, "position"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainOptions.from_dict(values)
