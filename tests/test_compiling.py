import keras
import numpy as np

from tfx_transformer import compiling


def test_jax_batches_round_rows_to_a_power_of_two_and_widths_to_sixteen(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    shapes = {count: compiling.pad_batch([[5] * (count % 20 + 1)] * count, 64).shape
              for count in (1, 2, 3, 4, 5, 33, 64)}
    assert shapes == {1: (1, 16), 2: (2, 16), 3: (4, 16), 4: (4, 16), 5: (8, 16), 33: (64, 16),
                      64: (64, 16)}
    padded = compiling.pad_batch([[5, 6], [7] * 17, [8]], 64)
    assert padded.shape == (4, 32) and padded.dtype == np.int32
    assert padded[:, :3].tolist() == [[5, 6, 0], [7, 7, 7], [8, 0, 0], [0, 0, 0]]
    assert compiling.pad_batch([[1]] * 5, 6).shape == (6, 16)  # never more rows than a batch
    # A bounded set of shapes: every row count from 1 to 64 gives one of 7.
    assert len({compiling.pad_batch([[1]] * n, 64).shape for n in range(1, 65)}) == 7


def test_tensorflow_batches_keep_their_own_shape(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    assert compiling.pad_batch([[5, 6], [7] * 17, [8]], 64).shape == (3, 17)


def test_jax_widths_stop_at_the_models_length(monkeypatch):
    """A model of max_length 50 with learned positions has no position 50: rows of up to 50
    tokens are padded to 50, not to 64."""
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert compiling.pad_batch([[5] * 50, [6] * 40], 64, max_width=50).shape == (2, 50)
    assert compiling.pad_batch([[5] * 40], 64, max_width=50).shape == (1, 48)  # 48 fits: kept
    assert compiling.pad_batch([[5] * 50], 64, max_width=64).shape == (1, 64)
    assert compiling.pad_batch([[5] * 55], 64, max_width=50).shape == (1, 55)  # never cut
