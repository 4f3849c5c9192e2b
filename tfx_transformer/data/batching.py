"""Batches by a token budget: length buckets, batches filled to the budget at their longest
member, 0-padded int32 arrays. Done in NumPy ahead of an epoch, so the number of batches and the
padding are known before training starts (progress bar, resume and distribution want them)."""

import numpy as np


def bucket_boundaries(max_length, smallest=8, growth=1.25):
    """Bucket upper bounds from `smallest` to `max_length`, growing ~25% each."""
    bounds, bound = [], smallest
    while bound < max_length:
        bounds.append(bound)
        bound = max(bound + 1, int(bound * growth + 0.5))
    return bounds + [max_length]


def batch_indices(lengths, batch_tokens, max_length, shuffle_seed=None, sort_by_length=True):
    """Groups example indices into batches of similar length, each within `batch_tokens`
    padded tokens. Examples fall into length buckets (`bucket_boundaries`); a batch takes a
    bucket's members until one more would pass the budget at the batch's longest length.
    With `sort_by_length` the members are sorted by length first, so batches are as little
    padded as the lengths allow; without, they stay in shuffled order, so batches mix lengths
    (and whatever goes with length) more. Shuffled (examples before bucketing, which orders
    equal lengths, then the batches) when `shuffle_seed` is given; in bucket order otherwise."""
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        order = rng.permutation(order)
    bounds = bucket_boundaries(max_length)
    buckets = {}
    for index in order:
        bound = bounds[int(np.searchsorted(bounds, lengths[index]))]
        buckets.setdefault(bound, []).append(index)
    chunks = []
    for bound in sorted(buckets):
        chunk, longest = [], 1
        members = buckets[bound]
        if sort_by_length:
            members = sorted(members, key=lambda i: lengths[i])  # stable: keeps the shuffle
        for index in members:
            length = max(int(lengths[index]), longest)
            if chunk and (len(chunk) + 1) * length > batch_tokens:
                chunks.append(chunk)
                chunk, length = [], max(int(lengths[index]), 1)
            chunk.append(index)
            longest = length
        chunks.append(chunk)
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


def padding_fraction(arrays):
    """The share of zeros (padding) in int arrays."""
    real = sum(int((a != 0).sum()) for a in arrays)
    total = sum(a.size for a in arrays)
    return 1.0 - real / total if total else 0.0


def pad_rows(rows, multiple=1):
    """Lists of ids -> int32 [len(rows), width], 0-padded on the right; the width is the longest
    row's length rounded up to `multiple`."""
    longest = max(len(r) for r in rows)
    padded = np.zeros((len(rows), -(-longest // multiple) * multiple), "int32")
    for row, ids in enumerate(rows):
        padded[row, : len(ids)] = ids
    return padded
