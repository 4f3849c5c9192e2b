"""The training loop's counters and TensorBoard summaries, kept in one place so that the loop
reads as a loop: target tokens and time per logging interval (evaluation pauses excluded), the
speed, and the scalars written for train/ and validation/."""

import contextlib
import time

from tfx_transformer.training.summaries import SummaryWriter


class TrainingStats:
    """Counts tokens and training time; on the chief, writes logs/train and logs/validation."""

    def __init__(self, paths, chief):
        self.writers = {}
        if chief:
            self.writers = {
                "train": SummaryWriter(paths.train_logs),
                "validation": SummaryWriter(paths.validation_logs),
            }
        self.interval_tokens = 0.0
        self.interval_start = time.time()
        self.tokens_per_sec = 0.0  # over the last closed interval
        self.trained_tokens = 0.0
        self.trained_seconds = 0.0

    def add(self, tokens):
        self.interval_tokens += tokens

    def close_interval(self, step, loss, accuracy, learning_rate):
        """Ends a logging interval: its speed, and the train scalars at `step`."""
        elapsed = time.time() - self.interval_start
        self.tokens_per_sec = self.interval_tokens / max(elapsed, 1e-9)
        self.trained_tokens += self.interval_tokens
        self.trained_seconds += elapsed
        if "train" in self.writers:
            writer = self.writers["train"]
            for name, value in (("loss", loss), ("accuracy", accuracy),
                                ("learning_rate", learning_rate),
                                ("tokens_per_sec", self.tokens_per_sec)):
                writer.scalar(name, value, step)
        self.interval_tokens, self.interval_start = 0.0, time.time()

    def running_rate(self):
        """Tokens per second so far in this interval (the last interval's at its start)."""
        if not self.interval_tokens:
            return self.tokens_per_sec
        return self.interval_tokens / max(time.time() - self.interval_start, 1e-9)

    @property
    def average_tokens_per_sec(self):
        return self.trained_tokens / self.trained_seconds if self.trained_seconds else 0.0

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside (evaluation) is not training time."""
        pause = time.time()
        try:
            yield
        finally:
            self.interval_start += time.time() - pause

    def write_validation(self, step, metrics, write_task_summaries):
        """The metrics as scalars; `write_task_summaries(writer, step)` adds the task's own."""
        writer = self.writers["validation"]
        for name, value in metrics.items():
            writer.scalar(name, value, step)
        write_task_summaries(writer, step)
        writer.flush()

    def write_hparams(self, options, model_config):
        flat = {}
        for key, value in {**options.to_dict(), **model_config.to_dict()}.items():
            if isinstance(value, (bool, int, float, str)):
                flat[key] = value
        self.writers["train"].hparams(flat)

    def close(self):
        for writer in self.writers.values():
            writer.close()


class StepResults:
    """Each training step's (loss sum, correct predictions, target tokens), read one step late.

    Reading a value waits for the step that made it. Read at once, the device would idle while
    the host counts, logs, places the next batch and queues the next step (about 2 ms a step on
    the development machine's CPU, where an H100 runs a base step of 8,192 tokens in ~33 ms);
    read once the next step is queued, that host work overlaps it. A logging point is read at
    once, so that its learning rate is the one at its step; `read` reads the last step now (before
    an evaluation, at the end).
    """

    def __init__(self, stats, progress, log_every, total_steps, learning_rate):
        self.stats = stats
        self.progress = progress
        self.log_every = log_every
        self.total_steps = total_steps
        self.learning_rate = learning_rate  # the rate after the last queued step
        self._pending = None

    def add(self, step, values):
        """`values` of `step`, just queued: the previous step's are read now."""
        self.read()
        self._pending = (step, values)
        if self._logging_point(step):
            self.read()

    def read(self):
        if self._pending is None:
            return
        (step, (loss_sum, correct, tokens)), self._pending = self._pending, None
        tokens = float(tokens)
        self.stats.add(tokens)
        loss = float(loss_sum) / max(tokens, 1.0)
        accuracy = float(correct) / max(tokens, 1.0)
        if self._logging_point(step):
            self.stats.close_interval(step, loss, accuracy, self.learning_rate())
        self.progress.update(step, loss, accuracy, self.stats.running_rate())

    def _logging_point(self, step):
        return step % self.log_every == 0 or step == self.total_steps
