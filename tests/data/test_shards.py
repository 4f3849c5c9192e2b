"""Shard files and the batch stream over them: what TensorFlow and Python read is what was
written, workers read disjoint shards that cover the set, seeking (with or without saved
anchors) gives the batches an uninterrupted stream gives, and workers that must agree on each
step's batch shape do, from the start and on resuming."""

import collections
import json
import threading

import numpy as np
import pytest

from tfx_transformer.data import DataError
from tfx_transformer.data.shards import (
    BatchStream,
    ShapeAgreement,
    StreamEpoch,
    describe_manifest,
    estimate_batches,
    quantile_lengths,
    read_manifest,
    read_shard,
    shard_name,
    tf_dataset,
    write_shard,
)


def random_examples(rng, count, offset=0):
    """Examples whose first source id numbers them, so that each can be told apart."""
    return [
        ([offset + i] + rng.integers(4, 900, rng.integers(0, 12)).tolist(),
         rng.integers(4, 900, rng.integers(1, 15)).tolist())
        for i in range(count)
    ]


def write_set(folder, rng, sizes):
    """A shard set with shards of `sizes` examples and the manifest fields the stream reads."""
    shards, offset = [], 0
    for index, size in enumerate(sizes):
        write_shard(folder / shard_name(index), random_examples(rng, size, offset))
        shards.append({"file": shard_name(index), "examples": size})
        offset += size
    manifest = {"format": "tfx_transformer.prepared", "version": 1, "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_python_and_tensorflow_read_what_was_written(tmp_path, rng):
    examples = random_examples(rng, 50) + [([7], [8, 9])]
    write_shard(tmp_path / "s.txt.gz", examples)
    assert list(read_shard(tmp_path / "s.txt.gz")) == [tuple(e) for e in examples]
    assert list(read_shard(tmp_path / "s.txt.gz", skip=48)) == [tuple(e) for e in examples[48:]]
    read_by_tf = [tuple(side.tolist() for side in pair)
                  for pair in tf_dataset([str(tmp_path / "s.txt.gz")]).as_numpy_iterator()]
    assert read_by_tf == [tuple(e) for e in examples]


def test_shards_are_deterministic_bytes(tmp_path, rng):
    examples = random_examples(rng, 20)
    write_shard(tmp_path / "a.txt.gz", examples)
    write_shard(tmp_path / "b.txt.gz", examples)
    assert (tmp_path / "a.txt.gz").read_bytes() == (tmp_path / "b.txt.gz").read_bytes()


def first_ids(examples, seed):
    """A window's 'batches': its examples' numbers, in shuffled order, four to a batch."""
    order = np.random.default_rng(seed).permutation(len(examples))
    numbers = [examples[i][0][0] for i in order]
    return [numbers[i : i + 4] for i in range(0, len(numbers), 4)]


def test_workers_read_disjoint_shards_that_cover_the_set(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [30, 25, 40, 10, 22])
    seen = collections.Counter()
    for worker in range(2):
        stream = BatchStream(str(tmp_path), manifest, first_ids, window=16, seed=3,
                             worker=worker, workers=2)
        per_epoch = sum(-(-min(16, stream.examples - start) // 4)
                        for start in range(0, stream.examples, 16))
        batches = stream.batches()
        epoch = [n for _ in range(per_epoch) for n in next(batches)]
        assert len(epoch) == len(set(epoch)) == stream.examples
        seen.update(epoch)
    assert sorted(seen) == list(range(127)) and set(seen.values()) == {1}


def test_each_data_epoch_shuffles_again(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [12, 12, 12])
    stream = BatchStream(str(tmp_path), manifest, first_ids, window=36, seed=0)
    batches = stream.batches()
    first = [n for _ in range(9) for n in next(batches)]
    second = [n for _ in range(9) for n in next(batches)]
    assert sorted(first) == sorted(second) == list(range(36))
    assert first != second


@pytest.mark.parametrize("with_anchors", [True, False])
def test_seeking_gives_the_batches_of_an_uninterrupted_stream(tmp_path, rng, with_anchors):
    manifest = write_set(tmp_path, rng, [23, 17, 31])
    anchors = str(tmp_path / "anchors.json") if with_anchors else None
    whole = BatchStream(str(tmp_path), manifest, first_ids, window=10, seed=5, anchors_path=anchors)
    stream = whole.batches()
    reference = [next(stream) for _ in range(60)]  # past the end of the first data epoch (19)
    for start in (0, 3, 17, 19, 20, 41):
        # A new stream, as a resumed run makes: it reads the anchors the first one saved.
        resumed = BatchStream(str(tmp_path), manifest, first_ids, window=10, seed=5,
                              anchors_path=anchors)
        batches = resumed.batches(start)
        assert [next(batches) for _ in range(60 - start)] == reference[start:], start
    if with_anchors:
        saved = json.loads((tmp_path / "anchors.json").read_text())
        # One per window: 8 windows a data epoch (10, 10, 3 + 10, 7 + 10, 10, 10, 1 examples).
        assert len(saved) >= 8 and saved["0"] == [0, 0]


def test_a_stream_without_batches_is_an_error_not_a_hang(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [5])
    stream = BatchStream(str(tmp_path), manifest, lambda examples, seed: [], window=4, seed=0)
    with pytest.raises(DataError, match="make no batches"):
        next(stream.batches())


def test_more_workers_than_shards_is_refused(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [5, 5])
    with pytest.raises(DataError, match="too few for 3 workers"):
        BatchStream(str(tmp_path), manifest, first_ids, window=4, seed=0, worker=2, workers=3)


def test_stream_epochs_continue_where_the_last_one_stopped(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [40])
    stream = BatchStream(str(tmp_path), manifest, first_ids, window=40, seed=1)
    reference = stream.batches()
    reference = [next(reference) for _ in range(24)]
    # 3 steps an epoch of 2 batches a step (two replicas of this worker)
    epochs = [StreamEpoch(stream, epoch, batches_per_epoch=6) for epoch in range(4)]
    taken = [b for e in epochs for b in e.local_batches(steps_per_epoch=3, first_step=0, per_step=2)]
    assert taken == reference
    assert list(epochs[2].local_batches(3, 1, 2)) == reference[14:18]
    assert len(epochs[0]) == 6


def test_estimate_is_exact_when_one_window_holds_a_worker(rng):
    lengths = np.sort(rng.integers(1, 30, 500))
    histogram = {str(k): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))}
    seen = []

    def count(window):
        seen.append(window)
        return len(window) // 7 + 1, int(window.sum())

    batches, padded = estimate_batches(histogram, [500], window=1000, count_batches=count)
    assert (batches, padded) == (500 // 7 + 1, int(lengths.sum()))
    np.testing.assert_array_equal(seen[0], lengths)
    # Windows of 100: five of them, each batched as a fifth of the quantiles is.
    batches, _ = estimate_batches(histogram, [500], window=100, count_batches=count)
    assert batches == 5 * (100 // 7 + 1)
    # Two workers of 300 and 200 examples: windows of 100 each.
    batches, _ = estimate_batches(histogram, [300, 200], window=100, count_batches=count)
    assert batches == 5 * (100 // 7 + 1)


def test_manifest_checks_and_rendering(tmp_path, rng):
    with pytest.raises(DataError, match="did not finish"):
        read_manifest(str(tmp_path))
    manifest = write_set(tmp_path, rng, [3])
    (tmp_path / shard_name(0)).unlink()
    with pytest.raises(DataError, match="1 shard\\(s\\) missing"):
        read_manifest(str(tmp_path))
    manifest.update({
        "examples": 1234, "unit": "pair", "source": "parallel:a,b", "skipped_empty": 2,
        "validation_examples": 10, "tokens": [5000, 6000],
        "tokenizer": {"vocab_size": 300, "sha256": "ab" * 32},
        "length_histogram": {"3": 1000, "25": 200, "60": 34},
    })
    text = describe_manifest(manifest)
    assert "1,234 pairs in 1 shard(s) from parallel:a,b" in text
    bars = [line for line in text.splitlines() if line.startswith("  ")]
    assert sum(int(line.split()[1].replace(",", "")) for line in bars) == 1234
    assert bars[0].endswith("#" * 40)  # the fullest bin gets the longest bar
    every = quantile_lengths(manifest["length_histogram"], 1234)
    assert list(every[[0, 999, 1000, 1233]]) == [3, 3, 25, 60] and len(every) == 1234
    assert list(quantile_lengths(manifest["length_histogram"], 3)) == [3, 3, 60]
    assert list(quantile_lengths({"5": 2, "9": 2}, 4)) == [5, 5, 9, 9]


WIDTHS = (8, 16)


def shaped_batches(examples, seed):
    """A window's batches of two widths (by source length), three rows each, shuffled; row r
    holds its example's number + 1 in column 0 (0: an empty row)."""
    groups = {width: [] for width in WIDTHS}
    for source, _ in examples:
        groups[8 if len(source) <= 6 else 16].append(source[0] + 1)
    batches = []
    for width, numbers in groups.items():
        for start in range(0, len(numbers), 3):
            batch = np.zeros((3, width), "int32")
            chunk = numbers[start : start + 3]
            batch[: len(chunk), 0] = chunk
            batches.append((batch,))
    return [batches[i] for i in np.random.default_rng(seed).permutation(len(batches))]


def streams_in_step(folder, manifest, anchors, take):
    """Two workers' agreeing streams, each in a thread of its own (the collective is a barrier
    between them, as processes meet in one); `take(stream)` runs in each. Returns
    ([take's result per worker], [the agreements])."""
    barrier, slots = threading.Barrier(2, timeout=30), [None, None]

    def gather_for(worker):
        def gather(vector):
            slots[worker] = np.asarray(vector)
            barrier.wait()
            everything = np.stack(slots)
            barrier.wait()
            return everything

        return gather

    agreements = [ShapeAgreement(WIDTHS, gather_for(w)) for w in range(2)]
    streams = [BatchStream(str(folder), manifest, shaped_batches, window=20, seed=2, worker=w,
                           workers=2, anchors_path=anchors and f"{anchors}-{w}.json",
                           agreement=agreements[w]) for w in range(2)]
    results = [None, None]

    def run(worker):
        results[worker] = take(streams[worker])

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), "a worker did not finish (the agreement hung)"
    return results, agreements


def numbers_in(batches):
    return [int(n) - 1 for batch in batches for n in batch[0][:, 0] if n]


def test_agreeing_workers_take_batches_of_one_shape_at_every_step(tmp_path, rng):
    # Unequal shards: the workers' windows differ in count and make in length.
    manifest = write_set(tmp_path, rng, [37, 21, 40, 18, 29])
    (first, second), agreements = streams_in_step(
        tmp_path, manifest, None, lambda stream: [next(b) for b in [stream.batches()] for _ in range(40)]
    )
    assert [b[0].shape for b in first] == [b[0].shape for b in second]
    assert {b[0].shape[1] for b in first} == set(WIDTHS)
    # Nothing made up, nothing twice within a data epoch, and each worker only its own shards.
    own = [set(range(0, 37)) | set(range(58, 98)) | set(range(116, 145)), set(range(37, 58)) | set(range(98, 116))]
    for worker, batches in enumerate((first, second)):
        numbers = numbers_in(batches)
        assert set(numbers) <= own[worker]
    epoch = numbers_in(second[:8])  # fewer than worker 1's 39 examples
    assert len(epoch) == len(set(epoch))
    # Left to themselves, the workers' shapes would differ: the agreement did the aligning, by
    # leaving out what one had over the other's count.
    alone = [BatchStream(str(tmp_path), manifest, shaped_batches, window=20, seed=2, worker=w,
                         workers=2).batches() for w in range(2)]
    assert [next(alone[0])[0].shape for _ in range(40)] != [next(alone[1])[0].shape for _ in range(40)]
    assert sum(a.dropped for a in agreements) > 0
    # Each counts what its windows made: what it passed on (at least the 40 taken) and what it
    # left out.
    assert all(agreement.made - agreement.dropped >= 40 for agreement in agreements)


def test_agreeing_workers_resume_from_one_batch_with_anchors_of_unequal_reach(tmp_path, rng):
    manifest = write_set(tmp_path, rng, [37, 21, 40, 18, 29])
    anchors = str(tmp_path / "anchors")
    reference, _ = streams_in_step(tmp_path, manifest, anchors,
                                   lambda stream: [next(b) for b in [stream.batches()] for _ in range(50)])
    # One worker's anchors reach less far (it was killed before writing its last ones).
    saved = json.loads((tmp_path / "anchors-1.json").read_text())
    assert json.loads((tmp_path / "anchors-0.json").read_text()).keys() == saved.keys()
    kept = dict(sorted(saved.items(), key=lambda item: int(item[0]))[: len(saved) // 2])
    assert max(map(int, kept)) < 31 < max(map(int, saved))
    for start in (0, 13, 31):
        (tmp_path / "anchors-1.json").write_text(json.dumps(kept))  # as a resumed run writes more
        resumed, _ = streams_in_step(
            tmp_path, manifest, anchors,
            lambda stream: [next(b) for b in [stream.batches(start)] for _ in range(50 - start)])
        for worker in range(2):
            assert [b[0].tolist() for b in resumed[worker]] == \
                [b[0].tolist() for b in reference[worker][start:]], (start, worker)


def test_a_worker_that_stops_with_an_error_stops_the_others_instead_of_leaving_them_waiting(
        tmp_path, rng):
    manifest = write_set(tmp_path, rng, [37, 21, 40, 18, 29])
    anchors = str(tmp_path / "anchors")
    streams_in_step(tmp_path, manifest, anchors,
                    lambda stream: [next(b) for b in [stream.batches()] for _ in range(50)])
    # Anchor files not of one run: resuming at 31, worker 0 starts from an anchor that worker 1
    # lacks, and only worker 1 can tell.
    saved = json.loads((tmp_path / "anchors-0.json").read_text())
    before = sorted(int(number) for number in saved if int(number) <= 31)
    assert len(before) >= 3
    for worker, left_out in ((0, before[-1]), (1, before[-2])):
        kept = {number: place for number, place in saved.items() if int(number) != left_out}
        (tmp_path / f"anchors-{worker}.json").write_text(json.dumps(kept))

    def attempt(stream):
        try:
            return next(stream.batches(31))
        except DataError as error:
            return error

    (first, second), _ = streams_in_step(tmp_path, manifest, anchors, attempt)
    assert isinstance(second, DataError) and f"lacks batch {before[-2]}" in str(second)
    assert isinstance(first, DataError) and "worker(s) 1 stopped streaming" in str(first)
