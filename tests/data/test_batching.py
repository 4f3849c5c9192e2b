"""Batches by a token budget, shared by every task's data."""

import numpy as np

from tfx_transformer.data import batch_indices, bucket_boundaries


def test_batches_are_sorted_by_length_and_filled_to_the_budget(rng):
    lengths = rng.integers(1, 60, size=2000)
    budget, max_length = 300, 64
    chunks = batch_indices(lengths, budget, max_length, shuffle_seed=5)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(2000))
    bounds = bucket_boundaries(max_length)
    by_bucket = {}
    for chunk in chunks:
        buckets = {bounds[int(np.searchsorted(bounds, lengths[i]))] for i in chunk}
        assert len(buckets) == 1  # a batch never mixes buckets
        assert len(chunk) * lengths[chunk].max() <= budget
        by_bucket.setdefault(buckets.pop(), []).append(sorted(lengths[chunk]))
    for batches in by_bucket.values():
        batches.sort(key=lambda b: (b[0], b[-1], -len(b)))  # creation order within a bucket
        for shorter, longer in zip(batches, batches[1:]):
            assert shorter[-1] <= longer[0]  # length ranges of a bucket's batches do not overlap
            # full: the next example would have passed the budget at the new longest length
            assert (len(shorter) + 1) * longer[0] > budget
    # equal lengths are ordered by the shuffle, so another seed makes other batches
    other = batch_indices(lengths, budget, max_length, shuffle_seed=6)
    assert {tuple(sorted(c)) for c in chunks} != {tuple(sorted(c)) for c in other}
