"""Batches by a token budget, shared by every task's data."""

import numpy as np
import pytest

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


def test_packed_rows_hold_every_example_once_within_the_width(rng):
    from tfx_transformer.data import pack_indices

    # Sentence-like pairs: a target about as long as its source.
    sources = rng.integers(3, 40, size=3000)
    lengths = np.stack([sources, np.clip(sources + rng.integers(-4, 8, size=3000), 2, 48)], 1)
    width, rows = 64, 32
    batches = pack_indices(lengths, width, rows, shuffle_seed=3)
    packed = [row for batch in batches for row in batch]
    assert sorted(i for row in packed for i in row) == list(range(3000))
    assert all(len(batch) == rows for batch in batches[:-1]) and 0 < len(batches[-1]) <= rows
    for row in packed:
        assert (lengths[row].sum(axis=0) <= width).all()
    # Nearly as few rows as the tokens allow (one example a row would take 3000).
    least = int(np.ceil(lengths.sum(axis=0).max() / width))
    assert len(packed) <= 1.03 * least
    # The seed varies the rows; the same seed repeats them.
    assert pack_indices(lengths, width, rows, shuffle_seed=3) == batches
    assert pack_indices(lengths, width, rows, shuffle_seed=4) != batches


def test_packing_refuses_examples_wider_than_a_row():
    from tfx_transformer.data import pack_indices

    assert pack_indices([], 8, 2) == []
    with pytest.raises(ValueError, match="up to 9 tokens do not fit rows of 8"):
        pack_indices([[3, 9]], 8, 2)


def test_packed_translation_batches_rebuild_every_pair(rng):
    from tfx_transformer.data import BatchShapes
    from tfx_transformer.tasks.translation.data import make_batches
    from tfx_transformer.tokens import START_ID

    class Encoded:
        sources = [list(rng.integers(4, 50, size=n)) + [3] for n in rng.integers(1, 30, size=400)]
        targets = [list(rng.integers(4, 50, size=n)) + [3] for n in rng.integers(1, 30, size=400)]

    shapes = BatchShapes(multiple=8, fixed=True, replicas=2, packed=True)
    batches, padding = make_batches(Encoded, 512, 30, shuffle_seed=1, shapes=shapes)
    assert {tuple(a.shape) for b in batches for a in b} == {(2 * 512 // 32, 32)}  # one shape
    pairs = []
    for source, decoder_in, source_segments, target_segments, labels in batches:
        for r in range(len(source)):
            for segment in range(1, source_segments[r].max() + 1):
                on_source, on_target = source_segments[r] == segment, target_segments[r] == segment
                # an example's tokens are contiguous, its decoder input its labels shifted right
                assert np.ptp(np.flatnonzero(on_target)) == on_target.sum() - 1
                assert decoder_in[r][on_target][0] == START_ID
                np.testing.assert_array_equal(decoder_in[r][on_target][1:], labels[r][on_target][:-1])
                pairs.append((tuple(source[r][on_source]), tuple(labels[r][on_target])))
            assert not source[r][source_segments[r] == 0].any()  # segment 0: padding only
            assert not labels[r][target_segments[r] == 0].any()
    assert sorted(pairs) == sorted(zip(map(tuple, Encoded.sources), map(tuple, Encoded.targets)))
    # A width for the run (the task's choice) gives that shape.
    wider, _ = make_batches(Encoded, 512, 64, shuffle_seed=1, shapes=shapes, packed_width=48)
    assert {tuple(a.shape) for b in wider for a in b} == {(2 * (512 // 48), 48)}
    real = sum(len(s) + len(t) for s, t in zip(Encoded.sources, Encoded.targets))
    assert padding == pytest.approx(1 - real / sum(b[0].size + b[-1].size for b in batches))


def test_the_packing_width_weighs_padding_against_attention(rng):
    from tfx_transformer.data import BatchShapes, packing_width
    from tfx_transformer.tasks.translation.data import pack_batches, pair_lengths

    class Encoded:  # pairs of 9 to 13 tokens: one to a row of 16, two to a row of 24 or 32
        sources = [[5] * n for n in rng.integers(9, 14, size=600)]
        targets = [[6] * n for n in rng.integers(9, 14, size=600)]

    shapes = BatchShapes(multiple=8, fixed=True, packed=True)
    # the padding of rows of each width the choice weighs (16: the longest pair's, up to twice)
    padding = {w: pack_batches(Encoded, w, w, shapes=shapes)[1] for w in (16, 24, 32)}
    assert padding[16] > 0.25 and padding[24] < 0.15
    # A wide model pays little for attention: it takes the rows of least padding. One whose
    # attention costs about what the rest of a layer does takes the narrowest.
    chosen = packing_width(pair_lengths(Encoded), 64, shapes, d_model=512)
    assert chosen != 16 and padding[chosen] == min(padding.values())
    assert packing_width(pair_lengths(Encoded), 64, shapes, d_model=1) == 16
    assert packing_width(pair_lengths(Encoded), 12, shapes, d_model=512) == 16  # max_length 12, rounded up
    # Weighed on a sample of the pairs, but wide enough for every pair, sampled or not.
    Encoded.sources.append([5] * 30)
    Encoded.targets.append([6] * 3)
    assert packing_width(pair_lengths(Encoded), 64, shapes, d_model=1, sample=50) == 32  # 50: not sampled
