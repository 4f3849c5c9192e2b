"""Long text for `--task lm`: plain text files, the built-in counting text, token streams and
segment batches.

Specs: `text:PATH` (UTF-8 text; each non-blank line becomes tokens and an end-of-line token,
all lines one stream) and `builtin:counting` (runs of counting in number words, generated with
num2words: "four hundred and twelve , four hundred and thirteen , ..."; a run spans several
segments, so what a segment starts with depends on the segment before it).
"""

import dataclasses
import random

import numpy as np

from tfx_transformer.data import BatchShapes, DataError, padding_fraction, read_lines
from tfx_transformer.tokens import END_ID

COUNTING_SPLITS = {"train": 600, "validation": 40, "test": 80}  # runs of 20 to 60 numbers


@dataclasses.dataclass
class LongText:
    lines: list
    origin: str = ""

    def __len__(self):
        return len(self.lines)


def read_text(path):
    lines = [line.strip() for line in read_lines(path)]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path}: only blank lines.")
    return LongText(lines, f"text:{path}")


def counting_split(split, seed=0, sizes=None):
    """Runs of consecutive numbers in words, one run per line, deterministic from `seed`."""
    from num2words import num2words

    sizes = {**COUNTING_SPLITS, **(sizes or {})}
    if split not in sizes:
        raise DataError(f"builtin:counting has the splits {sorted(sizes)}; received {split!r}.")
    rng = random.Random(f"{seed}-{split}")
    lines = []
    for _ in range(sizes[split]):
        start = rng.randrange(0, 10_000)
        numbers = range(start, start + rng.randint(20, 60))
        lines.append(" , ".join(num2words(n) for n in numbers) + " .")
    return LongText(lines, f"builtin:counting[{split}]")


def load_spec(spec, split="train", seed=0):
    kind, _, rest = spec.partition(":")
    if kind == "builtin":
        if rest != "counting":
            raise DataError(f"Unknown built-in text {rest!r}; the built-in one is 'counting'.")
        return counting_split(split, seed)
    if kind == "text" and rest:
        return read_text(rest)
    raise DataError(f"Unknown text spec {spec!r}: use builtin:counting or text:PATH.")


def split_off_tail(text, fraction=0.05):
    """The last lines of a text as validation (a held-out stretch of the same long text)."""
    if len(text) < 2:
        raise DataError(f"{text.origin}: {len(text)} line(s) cannot make training and validation.")
    held = max(1, int(len(text) * fraction))
    return LongText(text.lines[:-held], text.origin), LongText(text.lines[-held:], text.origin)


def token_stream(tokenizer, text):
    """All lines as one int32 stream, each line followed by the end token."""
    pieces = []
    for ids in tokenizer.encode(text.lines):
        pieces.extend(ids)
        pieces.append(END_ID)
    return np.asarray(pieces, "int32")


def segment_batches(stream, segment_length, memory_length, batch_tokens, shuffle_seed=None,
                    shapes=BatchShapes()):
    """Batches of ([context [B, M],] inputs [B, L], labels [B, L]) int32 and the padding.

    Segments start every L tokens (from a random offset below L when `shuffle_seed` is given,
    so epochs cut the text differently); labels are the next tokens; the context is the M tokens
    before the segment (0-padded at the start of the stream), from which the model rebuilds the
    Transformer-XL memory. Without a memory (M = 0) batches are (inputs, labels). With
    `shapes.fixed` the last batch is padded with empty rows to the others' count.
    """
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    offset = int(rng.integers(segment_length)) if rng is not None else 0
    last = len(stream) - 1  # the last token has no next token to predict
    starts = np.arange(offset, last, segment_length)
    if rng is not None:
        starts = rng.permutation(starts)
    rows = max(1, batch_tokens // segment_length) * (shapes.replicas if shapes.fixed else 1)
    batches = []
    for first in range(0, len(starts), rows):
        chunk = starts[first : first + rows]
        inputs, labels = segments_at(stream, chunk, segment_length)
        if shapes.fixed:
            inputs, labels = (np.pad(a, ((0, rows - len(chunk)), (0, 0))) for a in (inputs, labels))
        if not memory_length:
            batches.append((inputs, labels))
            continue
        context = np.zeros((len(inputs), memory_length), "int32")
        for row, start in enumerate(chunk):
            before = stream[max(0, start - memory_length) : start]
            context[row, memory_length - len(before) :] = before
        batches.append((context, inputs, labels))
    return batches, padding_fraction([b[-1] for b in batches])


def segments_at(stream, starts, length):
    """(inputs, labels) int32 [len(starts), length]: the segments of `stream` that begin at
    `starts`, and the token after each position; 0 (not scored) past the stream's end."""
    inputs = np.zeros((len(starts), length), "int32")
    labels = np.zeros_like(inputs)
    for row, start in enumerate(starts):
        piece = stream[start : start + length + 1]
        inputs[row, : len(piece) - 1] = piece[:-1]
        labels[row, : len(piece) - 1] = piece[1:]
    return inputs, labels
