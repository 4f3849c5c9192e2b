"""Holding out validation examples when a data spec gives no validation split."""

import random

from tfx_transformer.data.readers import DataError
from tfx_transformer.reporting import log

NOISY_VALIDATION = 100  # fewer held-out examples than this, and fewer than asked: a warning


def split_off(data, count, seed=0):
    """(kept, held out): `count` random examples split off `data` (at most a tenth of it, at
    least one), both in their original order.

    `data` is any of the tasks' example sets: it has a length, `origin`, `unit` (what one example
    is called, for errors) and `subset(indices)`.
    """
    if len(data) < 2:
        raise DataError(
            f"{data.origin}: {len(data)} {data.unit}(s) cannot make training and validation."
        )
    asked, count = count, max(1, min(count, len(data) // 10 or 1))
    if count < min(asked, NOISY_VALIDATION):
        log(
            f"warning: {data.origin} has {len(data)} {data.unit}s; {count} held out for validation "
            f"(at most a tenth), not the {asked} asked for, and scores over so few are noisy. "
            "Give --valid-data for more."
        )
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    return data.subset(sorted(order[count:])), data.subset(sorted(order[:count]))
