"""`python train.py --task tagging` end to end: CoNLL files, outputs, metrics, export, errors."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.training.test_training import TINY, event_tags, train
from tfx_transformer.tasks.tagging.data import entities_split


def write_conll(path, data):
    lines = []
    for tokens, tags in zip(data.tokens, data.tags):
        lines.extend(f"{token} NN {tag}" for token, tag in zip(tokens, tags))
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tagging_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tagging")
    train_file = write_conll(folder / "train.conll", entities_split("train", sizes={"train": 400}))
    valid_file = write_conll(folder / "valid.conll", entities_split("validation", sizes={"validation": 40}))
    output = folder / "out"
    result = train(
        ["--task", "tagging", "--output", str(output), "--data", f"conll:{train_file}",
         "--valid-data", f"conll:{valid_file}", "--test-data", f"conll:{valid_file}",
         "--steps", "10", "--set", "position=tener", *TINY]
    )
    return output, result


@pytest.mark.slow
def test_tagging_run_writes_the_layout_metrics_and_summaries(tagging_run):
    output, result = tagging_run
    for name in ("config.json", "tokenizer/vocabulary.json", "model.keras", "metrics.json", "export/1"):
        assert (output / name).exists(), name
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "loss", "accuracy", "steps", "tokens_per_sec", "test_f1"):
        assert key in metrics, key
    assert metrics["steps"] == 10 and 0.0 <= metrics["f1"] <= 1.0
    assert metrics["test_sentences"] == 40
    assert "done: 10 steps" in result.stdout and "sample taggings" in result.stdout
    valid_tags = event_tags(output / "logs" / "validation")
    for tag in ("precision", "recall", "f1", "loss"):
        assert tag in valid_tags, (tag, valid_tags)
    assert "text" in valid_tags["samples"] and "images" in valid_tags["self_attention"]
    config = json.loads((output / "config.json").read_text())
    assert config["options"]["task"] == "tagging" and config["model"]["position"] == "tener"


SERVE = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = serve(text=tf.constant(["Anna Morgan joined Acme Inc. in Lyon ."]))
    print(json.dumps([t.decode() for t in out["tags"].numpy()[0]]))
    """
)


@pytest.mark.slow
def test_tagging_export_serves_tags_and_reexport_makes_version_two(tagging_run):
    output, _ = tagging_run
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(output / "export" / "1")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    tags = json.loads(served.stdout.strip().splitlines()[-1])
    vocabulary = json.loads((output / "tokenizer" / "vocabulary.json").read_text())
    assert len(tags) == 8 and set(tags) <= set(vocabulary["tags"][1:])
    again = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.export", "--run", str(output)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().endswith(os.path.join("export", "2"))


@pytest.mark.slow
def test_tagging_validation_tags_unknown_to_training_are_a_data_error(tmp_path):
    train_file = tmp_path / "train.conll"
    train_file.write_text("Anna B-PER\nsings O\n\nBob B-PER\n", encoding="utf-8")
    valid_file = tmp_path / "valid.conll"
    valid_file.write_text("Paris B-LOC\n", encoding="utf-8")
    result = train(
        ["--task", "tagging", "--output", str(tmp_path / "out"), "--data", f"conll:{train_file}",
         "--valid-data", f"conll:{valid_file}", *TINY],
        check=False,
    )
    assert result.returncode == 2
    assert "data error" in result.stderr and "B-LOC" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, extra",
    [
        ("tagging", []),
        ("lm", ["--set", "position=transformer_xl", "--set", "memory_length=8", "--set", "max_length=8"]),
    ],
)
def test_tagging_and_lm_train_under_mirrored_strategy(task, extra, tmp_path):
    # Two replicas on two logical CPUs; tagging batches hold 2 arrays, XL batches 3.
    result = train(
        ["--task", task, "--output", str(tmp_path / "out"), "--strategy", "mirrored",
         "--cpu-devices", "2", "--steps", "4", "--no-export", "--eval-examples", "8", *TINY, *extra]
    )
    assert "MirroredStrategy" in result.stdout and "2 replica(s)" in result.stdout
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"] == 4


def test_tagging_predicts_in_batches_of_similar_length_and_keeps_the_input_order(tmp_path):
    """Each sentence gets the tags the model gives it alone, whatever the batch it was sorted
    into (an untrained model, whose tags vary from token to token: a sentence given another's
    tags would show)."""
    import numpy as np

    from tfx_transformer.runs import RunPaths
    from tfx_transformer.tasks.tagging.task import PREDICT_BATCH_SIZE, TaggingTask
    from tfx_transformer.tasks.tagging.vocabulary import TagVocabulary
    from tfx_transformer.training.options import TrainOptions

    data = entities_split("validation", sizes={"validation": 2 * PREDICT_BATCH_SIZE + 7})
    task = TaggingTask(TrainOptions(task="tagging", model={"d_model": 32, "d_ff": 64, "num_heads": 2}),
                       RunPaths(str(tmp_path / "run")))
    task.vocabulary = TagVocabulary.build(data)
    config = task.model_config(task.vocabulary.vocab_size)
    task.max_length = config.max_length
    model = task.build_model(config)
    encoded = task.encode_for_evaluation(data)
    assert len({len(words) for words in encoded.words}) > 3  # lengths that sorting reorders
    tagged = task.predict(model, data, encoded)
    for sentence, words, tags in zip(data.tokens, encoded.words, tagged):
        alone = np.asarray(model.predict_tags(np.array([words], "int32")))[0]
        assert tags == task.vocabulary.decode_tags(alone) + ["O"] * (len(sentence) - len(words))
