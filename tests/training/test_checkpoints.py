"""The JAX engine's checkpoint files: whole or absent, the newest kept, names read back."""

import threading

import numpy as np
import pytest

from tfx_transformer.training.checkpoints import ArrayCheckpoints
from tfx_transformer.training.loop import checkpoint_step


@pytest.mark.parametrize("background", [False, True])
def test_keeps_the_newest_and_reads_back_what_it_wrote(tmp_path, background):
    checkpoints = ArrayCheckpoints(tmp_path / "ckpt", keep=2, background=background)
    assert checkpoints.latest() is None
    for step in (5, 10, 15):
        checkpoints.save(step, {"model/0000/w": np.full((2, 3), step, "float32"),
                                "optimizer/0000/iterations": np.array(step, "int64")})
    assert checkpoints.steps() == [10, 15]
    assert checkpoints.latest().endswith("ckpt-15.npz")
    loaded = checkpoints.load(checkpoints.latest())
    np.testing.assert_array_equal(loaded["model/0000/w"], np.full((2, 3), 15, "float32"))
    assert int(loaded["optimizer/0000/iterations"]) == 15
    assert [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".tmp")] == []


def test_bfloat16_is_stored_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    checkpoints = ArrayCheckpoints(tmp_path)
    checkpoints.save(1, {"w": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)})
    loaded = checkpoints.load(checkpoints.latest())["w"]
    assert loaded.dtype == np.float32 and loaded.tolist() == [1.5, -2.0]


def test_a_failed_write_leaves_no_checkpoint(tmp_path):
    checkpoints = ArrayCheckpoints(tmp_path)
    with pytest.raises(TypeError):
        checkpoints.save(3, {"w": object()})  # not an array: np.savez fails mid-write
    assert checkpoints.steps() == [] and list(tmp_path.iterdir()) == []


def test_a_background_write_returns_at_once_and_whoever_looks_waits_for_it(tmp_path, monkeypatch):
    release, writing = threading.Event(), []
    savez = np.savez

    def held_savez(file, **arrays):
        writing.append(threading.current_thread().name)
        assert release.wait(timeout=10)
        savez(file, **arrays)

    monkeypatch.setattr(np, "savez", held_savez)
    checkpoints = ArrayCheckpoints(tmp_path, background=True)
    checkpoints.save(7, {"w": np.ones(3, "float32")})  # returns while the write is held
    assert not (tmp_path / "ckpt-7.npz").exists()
    threading.Timer(0.2, release.set).start()
    assert checkpoints.latest().endswith("ckpt-7.npz")  # waited for the write
    assert writing == ["checkpoint_0"]  # written in the writing thread


def test_a_failed_background_write_is_raised_to_the_next_save_and_leaves_nothing(tmp_path):
    checkpoints = ArrayCheckpoints(tmp_path, background=True)
    checkpoints.save(3, {"w": object()})  # fails in the writing thread
    with pytest.raises(TypeError):
        checkpoints.save(4, {"w": np.ones(2)})  # the previous write's error, first
    assert checkpoints.steps() == [] and list(tmp_path.iterdir()) == []
    checkpoints.save(5, {"w": np.ones(2)})  # the error was told once; writing goes on
    assert checkpoints.steps() == [5]


def test_checkpoint_steps_of_both_engines():
    assert checkpoint_step("/run/checkpoints/ckpt-120") == 120
    assert checkpoint_step("/run/checkpoints/ckpt-8.npz") == 8
