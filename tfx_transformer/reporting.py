"""What a training job shows: timed log lines, TensorBoard tables and attention heat maps."""

import time

import numpy as np

_started = time.time()


def restart_clock(at=None):
    """Log times count from `at` (a time.time(); default now)."""
    global _started
    _started = time.time() if at is None else at
    return _started


def log(message):
    """Prints with the seconds since the job started, so the log shows where time goes."""
    lead = "\n" if message.startswith("\n") else ""
    print(f"{lead}[{time.time() - _started:6.1f}s] {message.lstrip()}", flush=True)


def attention_image(weights, cell=12):
    """[T, S] weights in [0, 1] -> [1, T * cell, S * cell, 3] uint8 heat map (dark = low)."""
    weights = np.asarray(weights, dtype="float32")
    weights = weights / max(float(weights.max()), 1e-9)
    big = np.kron(weights, np.ones((cell, cell), "float32"))
    # A blue-to-yellow ramp, readable without a plotting library.
    rgb = np.stack([big, big ** 0.5 * 0.9, 1.0 - big * 0.8], axis=-1)
    return (rgb[None] * 255).astype("uint8")


def markdown_table(headers, rows):
    """A Markdown table (TensorBoard's text plugin renders it)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append(("| " + " | ".join(str(cell) for cell in row) + " |").replace("\n", " "))
    return "\n".join(lines)
