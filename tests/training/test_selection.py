"""The choice of weights at the end of a run (best on validation, averaged checkpoints, early
stopping's count) and the time budget's clock."""

import json
import threading
import time

import keras
import numpy as np
import pytest

from tfx_transformer.training import selection
from tfx_transformer.training.timing import PHASES, PROVISIONAL_RESERVE, RunClock


def test_average_is_the_elementwise_mean_in_each_dtype():
    lists = [[np.full((2, 3), float(i), "float32"), np.array([i, 2 * i], "float32")] for i in (1, 2, 6)]
    mean = selection.average(lists)
    np.testing.assert_allclose(mean[0], np.full((2, 3), 3.0))
    np.testing.assert_allclose(mean[1], [3.0, 6.0])
    assert mean[0].dtype == np.float32
    with pytest.raises(ValueError, match="No checkpoints"):
        selection.average([])


def test_a_checkpoint_just_before_another_is_not_averaged_twice():
    assert selection.spaced([200, 400, 600, 603], every=200) == [200, 400, 603]
    assert selection.spaced([600, 200, 400], every=200) == [200, 400, 600]
    assert selection.spaced([3, 6, 9, 12], every=3) == [3, 6, 9, 12]


def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return model


@pytest.mark.parametrize("background", [False, True], ids=["in-line", "background"])
@pytest.mark.parametrize("direction,scores,best_index,since", [("max", [1.0, 3.0, 2.0, 2.5], 1, 2),
                                                                ("min", [3.0, 1.0, 1.0, 2.0], 2, 2)])
def test_best_weights_keep_the_best_and_count_evaluations_since(tmp_path, direction, scores, best_index,
                                                               since, background):
    model = small_model()
    best = selection.BestWeights(str(tmp_path), ("score", direction), background=background)
    kept = None
    for index, score in enumerate(scores):
        model.layers[0].kernel.assign(np.full((3, 2), float(index), "float32"))
        improved = best.update(10 * (index + 1), {"score": score}, model)
        if improved:
            kept = index
    assert kept == best_index and best.step == 10 * (best_index + 1)
    # A tie keeps the later weights, but is no improvement for early stopping's count.
    assert best.since == since
    np.testing.assert_array_equal(best.weights()[0], np.full((3, 2), float(best_index)))
    resumed = selection.BestWeights(str(tmp_path), ("score", direction))
    resumed.load()
    assert (resumed.score, resumed.step, resumed.since) == (best.score, best.step, best.since)


def test_best_weights_written_in_the_background_name_only_weights_on_disk(tmp_path, monkeypatch):
    model = small_model()
    best = selection.BestWeights(str(tmp_path), ("score", "max"), background=True)
    model.layers[0].kernel.assign(np.full((3, 2), 1.0, "float32"))
    best.update(10, {"score": 1.0}, model)
    best.wait()
    release, save = threading.Event(), selection.save_weights

    def held_save(path, arrays):
        assert release.wait(10)
        save(path, arrays)

    monkeypatch.setattr(selection, "save_weights", held_save)
    model.layers[0].kernel.assign(np.full((3, 2), 2.0, "float32"))
    assert best.update(20, {"score": 2.0}, model)  # returns while the weights are held
    model.layers[0].kernel.assign(np.full((3, 2), 9.0, "float32"))  # the next steps train on
    record = json.loads((tmp_path / "best.json").read_text())
    assert record["step"] == 10  # the record waits for the weights it names
    release.set()
    np.testing.assert_array_equal(best.weights()[0], np.full((3, 2), 2.0))  # as they were at 20
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 20

    def full_disk(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(selection, "save_weights", full_disk)
    best.update(30, {"score": 3.0}, model)
    with pytest.raises(OSError, match="No space"):
        best.wait()
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 20


def test_set_trainable_refuses_other_shapes():
    model = small_model()
    with pytest.raises(ValueError, match="saved shape"):
        selection.set_trainable(model, [np.zeros((4, 2)), np.zeros(2)])
    with pytest.raises(ValueError, match="1 arrays for 2"):
        selection.set_trainable(model, [np.zeros((3, 2))])


def test_clock_counts_phases_and_holds_back_the_estimated_end(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    clock = RunClock(1000.0, budget=100.0)
    now[0] += 5
    clock.switch("training")
    # Before any evaluation was timed, a share of the budget is held back.
    assert clock.reserve((3.0, 2.0), 2, export=True) == PROVISIONAL_RESERVE * 100.0
    now[0] += 50
    with clock.evaluation():
        now[0] += 4
    assert clock.evaluation_seconds == 4.0
    reserve = clock.reserve((3.0, 2.0), 2, export=False)
    assert reserve > 4.0 * (3.0 * 2 + 2.0)  # measured cost, with a margin, plus saving
    assert not clock.out_of_time(reserve=30.0)  # 59 s used, 30 held back, 100 in all
    now[0] += 12
    assert clock.out_of_time(reserve=30.0)
    summary = clock.summary()
    assert summary["preparing"] == 5 and summary["evaluating"] == 4 and summary["training"] == 62
    assert summary["total"] == sum(summary[phase] for phase in PHASES) == 71
    assert "within the budget of 100 s" in clock.describe()
    assert not RunClock(0.0).out_of_time(reserve=1e9)  # no budget, no limit
