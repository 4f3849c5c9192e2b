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


def test_fixed_shapes_give_one_shape_per_bucket_and_every_example_once(rng):
    from tfx_transformer.data import BatchShapes
    from tfx_transformer.tasks.translation.data import make_batches

    class Encoded:  # what encode_pairs gives: token id lists per side
        sources = [list(rng.integers(4, 50, size=n)) + [3] for n in rng.integers(1, 60, size=500)]
        targets = [list(rng.integers(4, 50, size=n)) + [3] for n in rng.integers(1, 60, size=500)]

    shapes = BatchShapes(multiple=8, fixed=True, replicas=2)
    budget, max_length = 512, 64
    batches, _ = make_batches(Encoded, budget, max_length, shuffle_seed=1, shapes=shapes)
    widths = shapes.widths(max_length)
    assert widths == [8, 16, 24, 32, 40, 56, 64]
    seen = {tuple(b[0].shape) for b in batches}
    assert seen <= {(shapes.rows(budget, w), w) for w in widths}  # one shape per bucket
    for source, decoder_in, labels in batches:
        assert source.shape == decoder_in.shape == labels.shape
        assert source.shape[0] % 2 == 0 and source.shape[0] // 2 * source.shape[1] <= budget
    real = sorted(tuple(row[row != 0]) for b in batches for row in b[0] if row.any())
    assert real == sorted(tuple(s) for s in Encoded.sources)  # every pair once, none cut
    # Without `fixed`, widths are only rounded: shapes follow each batch's longest member.
    loose, _ = make_batches(Encoded, budget, max_length, shuffle_seed=1, shapes=BatchShapes(8))
    assert all(b[0].shape[1] % 8 == 0 for b in loose) and len({b[0].shape for b in loose}) > len(seen)
