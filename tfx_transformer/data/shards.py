"""Prepared corpora: token ids in sharded, compressed files with a manifest, and the endless,
resumable stream of batches a training worker reads from its own shards.

A shard is a gzip-compressed text file, one example per line, each side's ids separated by
spaces and the sides by a tab ("5 17 9\t8 44"): tf.data reads it natively
(`tf.data.TextLineDataset(files, compression_type="GZIP")`, see `tf_dataset`), Python's gzip
without TensorFlow. Examples carry no start or end token: the task adds them, so that one shard
set serves any model length.

The stream: worker w of n reads the shards w, w + n, w + 2n, ... of the manifest (disjoint, and
together all of them). Each pass over them (a data epoch) takes them in an order shuffled for the
pass, cuts the examples into windows of `window` examples, and lets the task batch each window
(shuffled, bucketed by length, filled to the token budget). Batches are numbered from 0 along
the stream; a window's first batch number is an anchor, saved beside the checkpoints, from which
a resumed run seeks to its batch without redoing the windows before it. Where a step takes one
batch from each worker and needs one shape from all (several JAX processes), the workers agree
on each window's batches and on where a resume starts (`ShapeAgreement`).
"""

import gzip
import hashlib
import itertools
import json
import os

import numpy as np

from tfx_transformer.data.readers import DataError
from tfx_transformer.files import atomic_path, read_json, write_json_atomic

FORMAT = "tfx_transformer.prepared"
VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FOLDER = "tokenizer"


def shard_name(index):
    return f"shard-{index:05d}.txt.gz"


def model_checksum(model_proto):
    """What identifies a tokenizer: the sha256 of its serialized model."""
    return hashlib.sha256(bytes(model_proto)).hexdigest()


# Shard files -----------------------------------------------------------------------------------


class _IdText(dict):
    """Token id -> its decimal text, made once per id: looking the text up is twice as fast as
    formatting each id anew (measured on shards of 100,000 pairs)."""

    def __missing__(self, token_id):
        text = self[token_id] = str(token_id)
        return text


_ID_TEXT = _IdText()


def format_example(sides):
    text = _ID_TEXT.__getitem__
    return "\t".join(" ".join(map(text, ids)) for ids in sides)


def write_shard(path, examples):
    """Writes examples (tuples of id lists) as one shard, atomically: a reader never sees part
    of one."""
    with atomic_path(path) as temporary:
        text = "".join(format_example(sides) + "\n" for sides in examples).encode("ascii")
        # No time or name in the header: the same examples make the same bytes. Level 1:
        # 9x faster than the default 9, for files ~12% larger (measured on token ids).
        with open(temporary, "wb") as raw, gzip.GzipFile(
            fileobj=raw, mode="wb", mtime=0, compresslevel=1, filename=""
        ) as f:
            f.write(text)


def read_shard(path, skip=0):
    """The examples of a shard from its `skip`-th on, each a tuple of id lists."""
    with gzip.open(path, "rt", encoding="ascii") as f:
        for line in itertools.islice(f, skip, None):
            yield tuple([int(i) for i in side.split()] for side in line.rstrip("\n").split("\t"))


def tf_dataset(paths, sides=2):
    """The examples of shard files as a tf.data.Dataset of int32 vectors per side (TensorFlow
    reads them natively: gzip'd text lines)."""
    import tensorflow as tf

    def parse(line):
        parts = tf.strings.split(line, "\t")
        return tuple(
            tf.strings.to_number(tf.strings.split(parts[i]), tf.int32) for i in range(sides)
        )

    lines = tf.data.TextLineDataset(list(paths), compression_type="GZIP")
    return lines.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# The manifest ----------------------------------------------------------------------------------


def read_manifest(folder):
    """The manifest of a finished shard set; a clear error for anything else."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise DataError(f"prepared:{folder}: no such folder.")
    if not os.path.exists(path):
        raise DataError(
            f"prepared:{folder}: no {MANIFEST}, so its preparation did not finish; run "
            "`python -m tfx_transformer.prepare` again with the same arguments to complete it."
        )
    manifest = read_json(path)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(
            f"{path} is not a version-{VERSION} {FORMAT} manifest (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})."
        )
    missing = [s["file"] for s in manifest["shards"]
               if not os.path.exists(os.path.join(folder, s["file"]))]
    if missing:
        raise DataError(f"prepared:{folder}: {len(missing)} shard(s) missing, e.g. {missing[0]}.")
    return manifest


def describe_manifest(manifest, bins=10):
    """A shard set in a few lines: counts, tokenizer, and its length histogram as bars."""
    lengths = {int(k): v for k, v in manifest["length_histogram"].items()}
    lines = [
        f"{manifest['examples']:,} {manifest['unit']}s in {len(manifest['shards'])} shard(s) from "
        f"{manifest['source']}; {manifest['skipped_empty']:,} empty skipped; "
        f"{manifest['validation_examples']:,} held out for validation",
        f"tokens: {manifest['tokens'][0]:,} source, {manifest['tokens'][1]:,} target; tokenizer "
        f"{manifest['tokenizer']['vocab_size']} pieces, sha256 "
        f"{manifest['tokenizer']['sha256'][:12]}",
        "length (longer side, pieces): examples",
    ]
    if lengths:
        top = max(lengths)
        width = max(1, -(-top // bins))
        counts = {}
        for length, count in lengths.items():
            counts[length // width] = counts.get(length // width, 0) + count
        most = max(counts.values())
        for index in range(top // width + 1):
            count = counts.get(index, 0)
            bar = "#" * round(40 * count / most)
            lines.append(f"  {index * width:>5}-{index * width + width - 1:<5} {count:>12,} {bar}")
    return "\n".join(lines)


def quantile_lengths(histogram, size):
    """`size` of the example lengths that a {length: count} histogram holds, at evenly spaced
    ranks, sorted: all of them when `size` is their count (memory bound by `size`, not by the
    corpus)."""
    items = sorted((int(k), int(v)) for k, v in histogram.items() if int(v) > 0)
    if not items or size < 1:
        return np.zeros(0, "int64")
    values = np.array([k for k, _ in items], "int64")
    ends = np.cumsum([v for _, v in items])
    ranks = np.linspace(0, ends[-1] - 1, size).round().astype("int64")
    return values[np.searchsorted(ends, ranks, side="right")]


# The stream ------------------------------------------------------------------------------------


class BatchStream:
    """This worker's endless, deterministic sequence of batches from a shard set (see the module's
    description).

    `window_batches(examples, seed)`: the task's batches of a window's examples (a list of
    tuples of id lists), shuffled by `seed`. `anchors_path`: where window anchors are kept
    (None: not kept; seeking then replays the windows before the batch asked for).
    `agreement`: a `ShapeAgreement` where the workers' streams must agree on each batch's
    shape (every worker then calls it once per window, in step with the others).
    """

    def __init__(self, folder, manifest, window_batches, window, seed, worker=0, workers=1,
                 anchors_path=None, agreement=None):
        if window < 1:
            raise ValueError(f"`window` must be at least 1. Received: {window}")
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers} does not exist.")
        shards = manifest["shards"][worker::workers]
        if not shards or not sum(s["examples"] for s in shards):
            raise DataError(
                f"prepared:{folder} has {len(manifest['shards'])} shard(s): too few for "
                f"{workers} workers to read shards of their own (worker {worker} has none with "
                "examples); prepare it with smaller --shard-size."
            )
        self.folder = folder
        self.shards = shards
        self.window_batches = window_batches
        self.window = window
        self.seed = seed
        self.worker = worker
        self.anchors_path = anchors_path
        self.agreement = agreement
        self.anchors = self._load_anchors()  # {first batch number: [data epoch, window index]}

    @property
    def examples(self):
        return sum(s["examples"] for s in self.shards)

    def shard_order(self, epoch):
        rng = np.random.default_rng([self.seed, epoch, self.worker])
        return [self.shards[i] for i in rng.permutation(len(self.shards))]

    def epoch_examples(self, epoch, start=0):
        """(shard's place in the manifest, example) of data epoch `epoch` from its `start`-th
        example on, read from their shards (whole shards before it are skipped unread)."""
        place = {shard["file"]: index for index, shard in enumerate(self.shards)}
        for shard in self.shard_order(epoch):
            if start >= shard["examples"]:
                start -= shard["examples"]
                continue
            for example in read_shard(os.path.join(self.folder, shard["file"]), skip=start):
                yield place[shard["file"]], example
            start = 0

    def window_seed(self, epoch, index):
        """The shuffling seed of a window: --seed + epoch for the first window of the first
        worker (the in-memory path's seed for the epoch), distinct for every other."""
        return self.seed + epoch + 1_000_003 * (index + 1_000 * self.worker)

    def batches(self, first=0):
        """Yields the batches numbered `first`, `first + 1`, ... forever."""
        number, (epoch, index) = self._anchor_at_or_before(first)
        if self.agreement is not None:
            # Every worker replays from the same batch number, so that their windows (and
            # agreements) stay in step. Their anchors are the same numbers (each window
            # gives all the same count), one worker's perhaps a few windows further.
            common = self.agreement.start(number)
            if common != number:
                if common and common not in self.anchors:
                    raise self.agreement.fail(DataError(
                        f"{self.anchors_path} lacks batch {common}, where another worker resumes "
                        "its stream: the workers' anchor files are not of one run."
                    ))
                number, (epoch, index) = common, tuple(self.anchors.get(common, (0, 0)))
        while True:
            before, whole_epoch = number, index == 0
            examples = self.epoch_examples(epoch, index * self.window)
            while True:
                window = list(itertools.islice(examples, self.window))
                if not window:
                    break
                # Back in corpus order (the sort is stable) before the task shuffles: a corpus
                # that fits one window makes the batches the in-memory path makes.
                window.sort(key=lambda placed: placed[0])
                self._remember(number, epoch, index)
                window = [example for _, example in window]
                batches = self.window_batches(window, self.window_seed(epoch, index))
                if self.agreement is not None:
                    batches = self.agreement.batches(batches, [self.seed, number])
                for batch in batches:
                    if number >= first:
                        yield batch
                    number += 1
                index += 1
            if whole_epoch and number == before:
                error = DataError(
                    f"prepared:{self.folder}: worker {self.worker}'s shards make no batches (every "
                    "example over the length limit?)."
                )
                raise error if self.agreement is None else self.agreement.fail(error)
            epoch, index = epoch + 1, 0

    def _anchor_at_or_before(self, number):
        best = max((b for b in self.anchors if b <= number), default=None)
        if best is None:
            return 0, (0, 0)
        return best, tuple(self.anchors[best])

    def _remember(self, number, epoch, index):
        if number in self.anchors:
            return
        self.anchors[number] = [epoch, index]
        if self.anchors_path:
            write_json_atomic(self.anchors_path, {str(k): v for k, v in sorted(self.anchors.items())})

    def _load_anchors(self):
        if not self.anchors_path or not os.path.exists(self.anchors_path):
            return {}
        return {int(k): v for k, v in read_json(self.anchors_path).items()}


class ShapeAgreement:
    """Keeps the streams of workers whose every step takes one batch from each (several JAX
    processes: one global array a step, the same shape from all) in step: per window, each
    worker keeps of every batch width as many batches as the worker with the fewest has, and
    takes them in an order of widths drawn from a seed all share. What a worker has over that
    count is dropped from the epoch (few batches where the workers' shards are alike).

    `widths`: the widths batches take (`BatchShapes.widths`); `gather(vector)`: a collective
    that every worker calls with an int vector and that returns all of theirs, [workers, len].
    """

    def __init__(self, widths, gather):
        self.place = {width: index for index, width in enumerate(widths)}  # width -> count slot
        self.gather = gather
        self.made = 0  # batches this worker's windows made
        self.dropped = 0  # of them, left out

    def batches(self, batches, seed):
        """The batches of this worker's window that it keeps, in the shared order."""
        by_width = [[] for _ in self.place]
        for batch in batches:
            by_width[self.place[batch[0].shape[1]]].append(batch)
        counts = np.array([len(group) for group in by_width], np.int64)
        gathered = np.asarray(self.gather(counts))
        stopped = np.flatnonzero((gathered < 0).any(axis=1)).tolist()
        if stopped:
            raise DataError(
                f"worker(s) {', '.join(map(str, stopped))} stopped streaming with an error (in "
                "their log); this worker stops with them rather than wait for them."
            )
        kept = gathered.min(axis=0)
        order = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(kept)), kept))
        self.made += int(counts.sum())
        self.dropped += int(counts.sum() - kept.sum())
        taken = [iter(group) for group in by_width]
        return [next(taken[index]) for index in order]

    def start(self, number):
        """The batch number all workers start from: the smallest of theirs."""
        return int(np.asarray(self.gather(np.array([number], np.int64))).min())

    def fail(self, error):
        """Returns `error` for this worker to raise, after telling the others at their next
        agreement (where they wait for it) that it stops: they raise too instead of hanging."""
        self.gather(np.full(len(self.place), -1, np.int64))
        return error


def stream_fingerprint(**settings):
    """A short name for the settings that decide a stream's batches: anchors saved under one
    fingerprint are facts about that stream only."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class StreamEpoch:
    """One training epoch's share of a `BatchStream`, as the training engines take it in place of
    a list of batches: `len` is the estimated batches of all workers in an epoch (the loop plans
    its steps from it), `local_batches` this worker's batches of the epoch's steps."""

    def __init__(self, stream, epoch, batches_per_epoch):
        self.stream = stream
        self.epoch = epoch
        self.batches_per_epoch = batches_per_epoch

    def __len__(self):
        return self.batches_per_epoch

    def local_batches(self, steps_per_epoch, first_step, per_step):
        """The batches this worker feeds to steps `first_step` .. `steps_per_epoch` - 1 of the
        epoch, `per_step` a step (one per local replica)."""
        start = (self.epoch * steps_per_epoch + first_step) * per_step
        count = (steps_per_epoch - first_step) * per_step
        return itertools.islice(self.stream.batches(start), count)


def estimate_batches(histogram, worker_examples, window, count_batches):
    """The batches a data epoch makes over all workers, estimated from a {batching length:
    count} `histogram` of the examples (the manifest's): each worker's windows are batched as a
    window of evenly spaced quantiles of them would be (`count_batches(lengths)`: a window's
    batch count); exact for one worker whose examples fit one window. Returns (batches, the rows
    times widths of those batches), `count_batches` returning both for a window."""
    total, padded = 0.0, 0.0
    everything = sum(histogram.values())
    for examples in worker_examples:
        size = int(min(window, round(examples), everything))
        if size == 0:
            continue
        chosen = quantile_lengths(histogram, size)
        batches, width_tokens = count_batches(chosen)
        total += batches * examples / size
        padded += width_tokens * examples / size
    return max(1, round(total)), padded
