"""`builtin:algorithmic:copy|reverse|addition`: symbol sequences whose test split is longer
than anything in training, to measure length generalization (the Universal Transformer paper's
algorithmic tasks, section 3.3).

Tokens are single symbols separated by spaces, so that each is one vocabulary piece and a
sequence's length in tokens is its length in symbols. Training and validation take inputs of
1-20 symbols; the test split holds 21-40 and 41-60 (60 and the end token fit the tiny preset's
`max_length` of 64). Each pair carries its band (`ParallelText.bands`), and the test metrics
report exact match per band.

- copy: "7 3 3 9" -> "7 3 3 9"
- reverse: "7 3 3 9" -> "9 3 3 7"
- addition: two decimal numbers written least significant digit first, "4 2 + 9 1" (24 + 19)
  -> "3 4" (43): the carry then flows left to right, in the order the decoder writes, so one
  local rule solves every length.
"""

import numpy as np

from tfx_transformer.data import DataError

ALGORITHMIC_TASKS = ("copy", "reverse", "addition")
TRAIN_LENGTHS = (1, 20)
TEST_BANDS = ((21, 40), (41, 60))
ALGORITHMIC_SPLITS = {"train": 20_000, "validation": 500, "test": 1_000}
SYMBOLS = 10  # copy and reverse draw from the digits 0-9 too


def band_name(band):
    return f"{band[0]}-{band[1]}"


def algorithmic_pairs(name, split, seed=0, sizes=None):
    """(sources, targets, bands) of one split of the algorithmic task `name` (see the module
    docstring); `data.algorithmic_split` makes them `ParallelText`."""
    if name not in ALGORITHMIC_TASKS:
        raise DataError(
            f"builtin:algorithmic takes one of {', '.join(ALGORITHMIC_TASKS)}; received {name!r}."
        )
    sizes = {**ALGORITHMIC_SPLITS, **(sizes or {})}
    if split not in sizes:
        raise DataError(
            f"builtin:algorithmic:{name} has the splits {sorted(sizes)}; received {split!r}."
        )
    # One stream per split, so that each split's pairs do not depend on the others' sizes.
    rng = np.random.default_rng([seed, ALGORITHMIC_TASKS.index(name), sorted(sizes).index(split)])
    bands = [TRAIN_LENGTHS] if split != "test" else list(TEST_BANDS)
    count = sizes[split]
    sources, targets, names = [], [], []
    for i, band in enumerate(bands):
        share = count // len(bands) + (i < count % len(bands))
        for _ in range(share):
            source, target = make_pair(name, int(rng.integers(band[0], band[1] + 1)), rng)
            sources.append(" ".join(source))
            targets.append(" ".join(target))
            names.append(band_name(band))
    return sources, targets, names


def make_pair(name, length, rng):
    """(source symbols, target symbols) with `length` source symbols."""
    if name in ("copy", "reverse"):
        source = [str(d) for d in rng.integers(0, SYMBOLS, size=length)]
        return source, source if name == "copy" else source[::-1]
    # addition: `length` counts both numbers' digits and the plus sign (at least one digit each)
    if length < 3:
        length = 3
    first = int(rng.integers(1, length - 1))
    digits = rng.integers(0, 10, size=length - 1)
    a, b = digits[:first], digits[first:]
    total = _little_endian_value(a) + _little_endian_value(b)
    source = [str(d) for d in a] + ["+"] + [str(d) for d in b]
    return source, list(str(total)[::-1])


def _little_endian_value(digits):
    return sum(int(d) * 10**i for i, d in enumerate(digits))


def exact_match_by_band(translations, references, bands):
    """{band: share of exact matches} over the pairs of each band, in band order."""
    result = {}
    for band in dict.fromkeys(bands):
        rows = [i for i, b in enumerate(bands) if b == band]
        result[band] = float(
            np.mean([translations[i].strip() == references[i].strip() for i in rows])
        )
    return result
