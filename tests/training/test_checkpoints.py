"""The JAX engine's checkpoint files: whole or absent, the newest kept, names read back."""

import numpy as np
import pytest

from tfx_transformer.training.checkpoints import ArrayCheckpoints
from tfx_transformer.training.loop import checkpoint_step


def test_keeps_the_newest_and_reads_back_what_it_wrote(tmp_path):
    checkpoints = ArrayCheckpoints(tmp_path / "ckpt", keep=2)
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


def test_checkpoint_steps_of_both_engines():
    assert checkpoint_step("/run/checkpoints/ckpt-120") == 120
    assert checkpoint_step("/run/checkpoints/ckpt-8.npz") == 8
