"""What the console shows of training: a progress bar, or plain lines in a log file."""

import sys

import keras

from tfx_transformer.reporting import log


class Progress:
    """A progress bar on a terminal; in a log file, a plain line every ~5% of the steps (every
    100 when the total is unknown: a time budget ends the run)."""

    def __init__(self, total_steps, enabled):
        self.total_steps = total_steps
        self.enabled = enabled
        self.interactive = sys.stdout.isatty()
        self.every = max(1, total_steps // 20) if total_steps else 100
        if enabled and self.interactive:
            self.bar = keras.utils.Progbar(
                total_steps, stateful_metrics=["loss", "accuracy", "tok/s"], interval=0.5
            )

    def update(self, step, loss, accuracy, tokens_per_sec):
        if not self.enabled:
            return
        if self.interactive:
            values = [("loss", loss), ("accuracy", accuracy)]
            if tokens_per_sec:
                values.append(("tok/s", round(tokens_per_sec)))
            self.bar.update(step, values)
        elif step % self.every == 0 or step == self.total_steps:
            log(
                f"step {step}/{self.total_steps or '?'}: loss {loss:.4f}, accuracy {accuracy:.4f}, "
                f"{tokens_per_sec:.0f} tokens/s"
            )
