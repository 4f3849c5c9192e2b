"""Each epoch's training batches: the next epoch made in the background while one trains."""

import threading

import pytest

from tfx_transformer.training.epochs import EpochBatches


class FakeTask:
    """Records which epochs it made, and in which thread; `hold` keeps a making waiting."""

    streams = False

    def __init__(self, fail_at=None):
        self.made = []  # (epoch, thread name)
        self.fail_at = fail_at
        self.hold = threading.Event()
        self.hold.set()

    def train_batches(self, epoch, shapes):
        self.hold.wait(timeout=10)
        self.made.append((epoch, threading.current_thread().name))
        if epoch == self.fail_at:
            raise ValueError(f"epoch {epoch} cannot be made")
        return [f"batch {epoch}.{i}" for i in range(3)], 0.1


def test_the_next_epoch_is_made_in_the_background_while_one_trains():
    task = FakeTask()
    epochs = EpochBatches(task, shapes=None, last_epoch=2, first=["first 0"])
    assert epochs.batches(0) == ["first 0"]  # made already for the step plan: not again
    assert epochs.batches(1) == ["batch 1.0", "batch 1.1", "batch 1.2"]
    assert epochs.batches(2)[0] == "batch 2.0"
    epochs.close()
    # Epoch 1 was asked for as epoch 0 was handed out, epoch 2 as epoch 1 was; each in the
    # background thread; none past the last epoch.
    assert [epoch for epoch, _ in task.made] == [1, 2]
    assert all(thread.startswith("next-epoch") for _, thread in task.made)


def test_an_epoch_is_handed_out_only_once_made_and_its_error_comes_with_it():
    task = FakeTask(fail_at=1)
    task.hold.clear()
    epochs = EpochBatches(task, shapes=None, last_epoch=5, first=["first 0"])
    assert epochs.batches(0) == ["first 0"]
    assert task.made == []  # epoch 1 is being made, held
    task.hold.set()
    with pytest.raises(ValueError, match="epoch 1 cannot be made"):
        epochs.batches(1)
    epochs.close()


def test_a_resumed_run_makes_its_first_epoch_then_the_next_ahead():
    task = FakeTask()
    epochs = EpochBatches(task, shapes=None, last_epoch=4, first=["first 0"])
    assert epochs.batches(3)[0] == "batch 3.0"  # resumed in epoch 3: epoch 0's are not its
    assert task.made[0] == (3, threading.current_thread().name)
    epochs.close()
    assert [epoch for epoch, _ in task.made] == [3, 4]


def test_streamed_epochs_are_made_when_they_come():
    task = FakeTask()
    task.streams = True  # a prepared corpus: its epochs may exchange shapes between processes
    epochs = EpochBatches(task, shapes=None, last_epoch=3, first=["first 0"])
    assert epochs.batches(0)[0] == "batch 0.0"
    assert epochs.batches(1)[0] == "batch 1.0"
    epochs.close()
    assert task.made == [(0, threading.current_thread().name), (1, threading.current_thread().name)]


class UnevenTask(FakeTask):
    """Epochs of 3, 2, 4, 1 batches, as another shuffle may make a batch or so more or fewer."""

    def train_batches(self, epoch, shapes):
        return [f"batch {epoch}.{i}" for i in range((3, 2, 4, 1)[epoch])], 0.1


def test_an_epoch_made_with_fewer_batches_than_the_plan_repeats_some_of_its_own():
    task = UnevenTask()
    first, _ = task.train_batches(0, None)
    epochs = EpochBatches(task, shapes=None, last_epoch=3, first=first, count=len(first))
    assert epochs.batches(0) == first
    assert epochs.batches(1) == ["batch 1.0", "batch 1.1", "batch 1.0"]
    assert epochs.batches(2) == ["batch 2.0", "batch 2.1", "batch 2.2", "batch 2.3"]  # as made
    assert epochs.batches(3) == ["batch 3.0"] * 3
    epochs.close()


def test_language_model_epochs_of_one_segment_fewer_still_fill_the_step_plan():
    import numpy as np

    from tfx_transformer.tasks.lm import data as lm_data

    class SegmentTask(FakeTask):
        # 9 tokens to predict in segments of 4 from a random offset: 3 segments (2 batches of
        # 2 rows) where the offset is 0, as seed 11 draws it; 2 (one batch) where it is 1 to 3.
        def train_batches(self, epoch, shapes):
            return lm_data.segment_batches(np.arange(1, 11), 4, 0, 8, shuffle_seed=11 + epoch)

    task = SegmentTask()
    first, _ = task.train_batches(0, None)
    made = [len(task.train_batches(epoch, None)[0]) for epoch in range(1, 12)]
    assert len(first) == 2 and 1 in made  # the failure this guards against
    epochs = EpochBatches(task, shapes=None, last_epoch=11, first=first, count=len(first))
    assert [len(epochs.batches(epoch)) for epoch in range(12)] == [2] * 12
    epochs.close()
