"""Which weights a run keeps: the best on validation (kept as each evaluation improves on it,
`--early-stop` counts the evaluations since), and the average of the last `--average-last`
checkpoints; the end of the run scores both and keeps the better.

The best weights live in DIR/checkpoints/best.npz with DIR/checkpoints/best.json (score, step,
evaluations since), so that --resume carries them on.
"""

import json
import os

import numpy as np

from tfx_transformer.files import OrderedWrites, atomic_path, write_json_atomic


class BestWeights:
    """The best validation score so far, its step and trainable weights, and the evaluations
    since it. `metric` is (name, "max" or "min") of the task's metrics.

    With `background`, the files are written by a thread while training goes on (base's weights,
    0.19 GB, take ~0.15-0.5 s at the rate checkpoints are written on the development machine's
    disk, time an accelerator would wait at each evaluation that improves): the weights, then the
    record that names them, so that best.json never speaks of weights not yet in best.npz.
    `weights` and `wait` wait for the writing, raising what it raised."""

    def __init__(self, folder, metric, chief=True, background=False):
        self.name, self.direction = metric
        self.weights_path = os.path.join(folder, "best.npz")
        self.record_path = os.path.join(folder, "best.json")
        self.chief = chief
        self.score = None
        self.step = None
        self.since = 0  # evaluations since the best
        self._writes = OrderedWrites(background, "best-weights")

    def load(self):
        """What a resumed run had (nothing when it had none)."""
        if os.path.exists(self.record_path) and os.path.exists(self.weights_path):
            with open(self.record_path, encoding="utf-8") as f:
                record = json.load(f)
            self.score, self.step, self.since = record["score"], record["step"], record["since"]

    def better(self, score):
        if self.score is None:
            return True
        return score > self.score if self.direction == "max" else score < self.score

    def update(self, step, metrics, model):
        """After an evaluation at `step`: keeps `model`'s weights when they score at least as
        well as the best so far (on a tie, the later weights: they have trained longer, and
        on an easy set the score saturates early). Returns True when they are kept. `since`
        counts the evaluations since the score last improved strictly."""
        score = float(metrics[self.name])
        improved = self.better(score)
        kept = improved or score == self.score
        if kept:
            self.score, self.step = score, step
        self.since = 0 if improved else self.since + 1
        if self.chief:
            arrays = trainable_arrays(model) if kept else None
            record = {"metric": self.name, "score": self.score, "step": self.step, "since": self.since}
            self._writes.run(self._write, arrays, record)
        return kept

    def _write(self, arrays, record):
        if arrays is not None:
            save_weights(self.weights_path, arrays)
        write_json_atomic(self.record_path, record)

    def wait(self):
        """Waits for the files being written, if any; raises what writing them raised."""
        self._writes.wait()

    def weights(self):
        self.wait()
        return load_weights(self.weights_path)


def trainable_arrays(model):
    """Copies of the trainable weights (`numpy()` copies on TensorFlow and JAX alike): they stay
    as they were while training goes on and a thread writes them."""
    return [np.asarray(variable.numpy()) for variable in model.trainable_variables]


def set_trainable(model, arrays):
    variables = model.trainable_variables
    if len(arrays) != len(variables):
        raise ValueError(f"{len(arrays)} arrays for {len(variables)} trainable variables.")
    for variable, value in zip(variables, arrays):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{variable.path}: saved shape {value.shape}, model {variable.shape}.")
        variable.assign(value.astype(variable.dtype))


def save_weights(path, arrays):
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez(f, *arrays)


def load_weights(path):
    with np.load(path, allow_pickle=False) as data:
        return [data[f"arr_{index}"] for index in range(len(data.files))]


def spaced(steps, every):
    """The checkpoint steps to average: a checkpoint closer than every/2 steps to the next (the
    one a run writes where it stops, just after a periodic one) would weigh the same weights
    twice, so only the later of the two is kept."""
    steps = sorted(steps)
    return [step for step, after in zip(steps, steps[1:] + [None])
            if after is None or after - step >= every / 2]


def average(weight_lists):
    """The element-wise mean of several lists of arrays (float64 sums, so that many checkpoints
    add up without rounding drift), in each array's own dtype."""
    if not weight_lists:
        raise ValueError("No checkpoints to average.")
    means = []
    for arrays in zip(*weight_lists):
        total = np.zeros(arrays[0].shape, "float64")
        for array in arrays:
            total += array
        means.append((total / len(arrays)).astype(arrays[0].dtype))
    return means
