"""The loop's step results are read one step late (so the host's work overlaps the next step),
yet every step is counted once, in order, and a logging point carries its own step's values."""

import pytest

from tfx_transformer.training.stats import StepResults, TrainingStats


class Value:
    """A step's result that records when it is read (as reading a device array waits for it)."""

    def __init__(self, step, number, reads):
        self.step, self.number, self.reads = step, number, reads

    def __float__(self):
        self.reads.append(self.step)
        return float(self.number)


class Recorder:
    def __init__(self):
        self.updates, self.intervals = [], []

    def update(self, step, loss, accuracy, tokens_per_sec):
        self.updates.append((step, loss, accuracy))


@pytest.fixture
def reader(tmp_path):
    stats = TrainingStats(None, chief=False)
    progress = Recorder()
    closed = []
    stats.close_interval = lambda step, loss, accuracy, rate: closed.append((step, loss, rate))
    queued = []  # the steps queued so far; the learning rate is that of the last one
    results = StepResults(stats, progress, 4, 10, lambda: 0.5 * queued[-1])
    reads = []

    def add(step):  # step s: loss sum 2s over s tokens (loss 2), s // 2 correct
        queued.append(step)
        values = (Value(step, 2 * step, reads), Value(step, step // 2, reads), Value(step, step, reads))
        results.add(step, values)

    return results, add, reads, progress, closed, stats


def test_a_steps_values_are_read_once_the_next_step_is_queued(reader):
    results, add, reads, progress, closed, _ = reader
    add(1)
    assert reads == []  # the device would still be running step 1: nothing waits for it
    add(2)
    assert set(reads) == {1}
    add(3)
    assert set(reads) == {1, 2}
    assert [update[0] for update in progress.updates] == [1, 2]
    results.read()  # before an evaluation: the last step too
    assert set(reads) == {1, 2, 3} and [update[0] for update in progress.updates] == [1, 2, 3]
    results.read()  # nothing left: nothing read twice
    assert len(reads) == 9


def test_logging_points_are_read_at_once_with_their_own_values(reader):
    results, add, reads, progress, closed, stats = reader
    for step in range(1, 11):
        add(step)
        if step in (4, 8, 10):  # every 4 steps and the last one
            assert reads[-3:] == [step] * 3
    results.read()
    assert closed == [(4, 2.0, 2.0), (8, 2.0, 4.0), (10, 2.0, 5.0)]
    assert [update[0] for update in progress.updates] == list(range(1, 11))
    assert [update[2] for update in progress.updates] == [(s // 2) / s for s in range(1, 11)]
    assert sorted(reads) == sorted([s for s in range(1, 11) for _ in range(3)])
    # tokens of steps 9 and 10 in the interval after the close at 8 (the stub does not reset it)
    assert stats.interval_tokens == sum(range(1, 11))
