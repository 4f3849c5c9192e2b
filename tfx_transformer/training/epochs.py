"""Each epoch's training batches, the next epoch's made while this one trains.

A task makes an epoch's batches in NumPy and Python (shuffling, bucketing or packing): on the
shared Multi30k corpus 0.47-0.74 s an epoch on the development machine's CPU (packed rows of 64
for a base model), where an H100 trains that epoch in about 2.1 s (65 steps of ~33 ms). Made between two epochs, that is
time the device waits; made in a thread while the steps run, it overlaps them (the main thread
mostly waits on the device, outside Python's lock).
"""

import concurrent.futures
import itertools


class EpochBatches:
    """`batches(epoch)`: the task's training batches of `epoch` (`Task.train_batches`), and the
    next epoch's started in a background thread, up to `last_epoch`.

    `first`: epoch 0's batches, made already (the step plan counts them), used rather than made
    again. A task that streams its batches (a prepared corpus read by every worker, whose
    epochs may exchange shapes between processes) makes each epoch when it comes.

    `count`: the batches an epoch's steps take (the step plan's, from epoch 0's). An epoch made
    with fewer gets some of its own again to make them up: another shuffle may pack the same
    pairs into more or fewer rows (best fit over two sides: 3,000 pairs of random lengths up to
    32 tokens took 1,658 to 1,676 rows of 32 over 40 seeds), or cut a text into one segment
    fewer (the language model's random offset), and a step past an epoch's last batch failed
    deep inside the trainer (an IndexError). Batches past `count` are not trained on that
    epoch, as before.
    """

    def __init__(self, task, shapes, last_epoch, first=None, count=None):
        self._task = task
        self._shapes = shapes
        self._last_epoch = last_epoch
        self._count = count
        self._made = {} if first is None or task.streams else {0: first}
        self._ahead = None if task.streams else concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="next-epoch"
        )

    def batches(self, epoch):
        """Epoch `epoch`'s batches (as `Task.train_batches` gives them, without the padding)."""
        made = self._made.pop(epoch, None)
        self._made.clear()  # epoch 0's, where a resumed run starts in a later epoch
        if isinstance(made, concurrent.futures.Future):
            made = made.result()  # raises what making it raised
        if made is None:
            made = self._make(epoch)
        if self._ahead is not None and epoch < self._last_epoch:
            self._made[epoch + 1] = self._ahead.submit(self._make, epoch + 1)
        return made

    def _make(self, epoch):
        batches, _ = self._task.train_batches(epoch, self._shapes)
        if self._count is not None and isinstance(batches, list) and len(batches) < self._count:
            batches = list(itertools.islice(itertools.cycle(batches), self._count))
        return batches

    def close(self):
        """Drops an epoch made ahead that training did not reach (the run stopped early)."""
        if self._ahead is not None:
            for made in self._made.values():
                if isinstance(made, concurrent.futures.Future):
                    made.cancel()
            self._ahead.shutdown(wait=True)
        self._made.clear()
