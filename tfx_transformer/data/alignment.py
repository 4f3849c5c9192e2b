"""Is parallel text line-aligned? A line lost (or added) on one side shifts every later pair by
one, and training on such a corpus learns to translate a sentence into its neighbour's
translation. The check needs no model: a sentence and its translation have lengths that go
together (the log-ratio of their character counts varies little around its median), while a
sentence and its neighbour's translation do not. Where, from some line on, pairing each source
with the target before or after it fits clearly better than with its own, the text is
misaligned from there.
"""

import dataclasses

import numpy as np

# Fewer pairs than this: too few to tell.
MIN_PAIRS = 50
# A shifted stretch must fit better by this many standard deviations of the per-pair difference
# in all (summed over the stretch): aligned corpora stay far below (the shared Multi30k and the
# built-in sets peak under 6), a shift of 20 lines of real text already exceeds it.
THRESHOLD = 15.0


@dataclasses.dataclass
class Misalignment:
    first_line: int  # 1-based line of the first pair that looks shifted
    last_line: int  # 1-based line of the last one
    shift: int  # +1: source line i matches target line i + 1 (a source line lost); -1: i - 1
    evidence: float

    def describe(self, source_name, target_name):
        lost = target_name if self.shift < 0 else source_name
        pairing = "the target line before it" if self.shift < 0 else "the target line after it"
        return (
            f"the two sides look misaligned from line {self.first_line} to line {self.last_line}: "
            f"there, each source line's length matches {pairing} rather than its own (as when a "
            f"line of {lost} is missing near line {self.first_line})"
        )


def _log_lengths(lines):
    return np.log1p(np.array([len(line.strip()) for line in lines], "float64"))


def find_misalignment(sources, targets):
    """The stretch of lines where the sides look shifted by one, or None when they look aligned
    (or are too few to tell). Compares the first min(len) lines of each side."""
    count = min(len(sources), len(targets))
    if count < MIN_PAIRS:
        return None
    source = _log_lengths(sources[:count])
    target = _log_lengths(targets[:count])
    usable = (source > 0) & (target > 0)  # empty lines say nothing about alignment
    ratio = np.median((target - source)[usable])
    own = np.abs(target - source - ratio)
    best = None
    for shift in (-1, 1):
        neighbour = np.roll(target, -shift)  # neighbour[i] = target[i + shift]
        gain = own - np.abs(neighbour - source - ratio)
        valid = usable & np.roll(usable, -shift)
        if shift > 0:
            valid[-1] = False
        else:
            valid[0] = False
        gain = np.where(valid, gain, 0.0)
        spread = gain[valid].std() or 1.0
        start, end, total = _best_stretch(gain / spread)
        if total >= THRESHOLD and (best is None or total > best.evidence):
            best = Misalignment(start + 1, end, shift, float(total))
    return best


def _best_stretch(values):
    """(start, end, sum) of the contiguous stretch with the largest sum (Kadane)."""
    best_sum, best_start, best_end = 0.0, 0, 0
    running, start = 0.0, 0
    for index, value in enumerate(values):
        if running <= 0.0:
            running, start = value, index
        else:
            running += value
        if running > best_sum:
            best_sum, best_start, best_end = running, start, index + 1
    return best_start, best_end, best_sum
