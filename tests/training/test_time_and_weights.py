"""A run's end: --time-budget, --early-stop and --average-last, end to end on a tiny model."""

import json
import os
import time

import numpy as np
import pytest

from tests.training.test_training import TINY, numbers_tsv, train


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    return numbers_tsv(tmp_path_factory.mktemp("data") / "train.tsv", 400)


def metrics_of(output):
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_a_run_under_a_time_budget_ends_inside_it_with_a_complete_folder(tmp_path, tsv):
    budget = 75
    output = tmp_path / "out"
    started = time.time()
    result = train(["--output", str(output), "--data", f"tsv:{tsv}", *TINY, "--eval-every", "10",
                    "--time-budget", str(budget)])
    elapsed = time.time() - started
    metrics = metrics_of(output)
    assert elapsed <= budget, (elapsed, metrics["time"])
    assert metrics["time"]["stopped_by_budget"] and metrics["time"]["total"] <= budget
    # It trained, not just stopped (a busy machine made 17 steps here, a quiet one 20 and more:
    # a budget spent on its reserve alone would make none).
    assert metrics["steps"] >= 10
    for name in ("config.json", "model.keras", "metrics.json", "tokenizer", "export", "logs"):
        assert (output / name).exists(), name
    assert "time budget: stopping at step" in result.stdout
    assert "within the budget of 75 s" in result.stdout


@pytest.mark.slow
def test_early_stop_ends_after_k_evaluations_without_improvement(tmp_path, tsv):
    output = tmp_path / "out"
    # A learning rate of ~0 never improves on the first evaluation: one more ends the run (the
    # tie keeps the later weights).
    result = train(["--output", str(output), "--data", f"tsv:{tsv}", *TINY, "--eval-every", "3",
                    "--steps", "30", "--learning-rate-scale", "1e-9", "--early-stop", "1",
                    "--no-export"])
    metrics = metrics_of(output)
    assert metrics["steps"] == 6
    assert "early stop: 1 evaluations without a better validation bleu" in result.stdout
    assert metrics["weights"] in ("best", "averaged") and metrics["candidates"]["best"]["step"] == 6


@pytest.mark.slow
def test_average_last_scores_the_averaged_checkpoints_against_the_best(tmp_path, tsv):
    output = tmp_path / "out"
    result = train(["--output", str(output), "--data", f"tsv:{tsv}", *TINY, "--steps", "12",
                    "--checkpoint-every", "3", "--average-last", "3", "--no-export"])
    metrics = metrics_of(output)
    candidates = metrics["candidates"]
    assert candidates["averaged"]["checkpoints"] == [6, 9, 12]
    assert set(candidates) == {"best", "averaged"} and metrics["weights"] in candidates
    chosen = candidates[metrics["weights"]]
    assert metrics["bleu"] == chosen["bleu"] and "length_ratio" in metrics
    assert len(os.listdir(output / "checkpoints")) >= 3
    assert f"keeping the {metrics['weights']} weights" in result.stdout
    # The test set's scores and the readable summary come with it.
    assert "test_bleu" not in metrics or "test BLEU" in result.stdout


def test_averaged_checkpoints_are_the_mean_of_their_weights(tmp_path):
    """The engine reads each checkpoint's trainable weights; their mean is what is averaged."""
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.tasks.translation import data as data_lib
    from tfx_transformer.training.options import TrainOptions
    from tfx_transformer.training.trainer import Trainer
    from tfx_transformer.config import TransformerConfig
    import tensorflow as tf

    options = TrainOptions(output=str(tmp_path), average_last=3)
    config = TransformerConfig(vocab_size=40, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
                               num_decoder_layers=1, max_length=16)
    trainer = Trainer(options, config, tf.distribute.get_strategy(), RunPaths(str(tmp_path)))
    trainer.model({"source_ids": np.ones((1, 4), "int32"), "target_ids": np.ones((1, 4), "int32")})
    saved = []
    for step in range(1, 5):
        arrays = [np.random.default_rng(step).normal(size=v.shape).astype("float32")
                  for v in trainer.model.trainable_variables]
        trainer.assign_trainable(arrays)
        trainer.optimizer.iterations.assign(step)
        trainer.save_checkpoint()
        saved.append(arrays)
    paths = trainer.checkpoint_paths()
    assert len(paths) == 3  # --average-last 3 keeps 3, not 2
    read = [trainer.trainable_at(path) for path in paths]
    for got, expected in zip(read, saved[1:]):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
