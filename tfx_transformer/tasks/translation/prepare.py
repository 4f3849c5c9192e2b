"""Preparing a parallel corpus of any size for `train.py --data prepared:DIR`: a SentencePiece
tokenizer trained on a sample (or one given), the pairs encoded by worker processes a shard at a
time (memory bound by the shards in flight, not by the corpus), sharded token ids
(`data.shards`), held-out validation text and a manifest.

    DIR/tokenizer/             the SentencePiece model every shard was encoded with
    DIR/shard-00000.txt.gz     token ids, one pair per line (see data.shards)
    DIR/shard-00000.json       that shard's counts, written after it: the shard is finished
    DIR/validation.source, DIR/validation.target   the held-out pairs, as text
    DIR/preparation.json       the inputs and options (a rerun must match them to resume)
    DIR/manifest.json          written last: the set is complete

Shard k holds the usable pairs of input lines [k * shard_size, (k + 1) * shard_size), so an
interrupted preparation resumes by encoding the shards without a .json and nothing else.
"""

import dataclasses
import itertools
import multiprocessing
import os
import time

import numpy as np

from tfx_transformer import DATA_ONLY_VARIABLE
from tfx_transformer.data import DataError, Tokenizer
from tfx_transformer.data.alignment import find_misalignment
from tfx_transformer.data.readers import UTF8_BOM, decode_lines, open_binary
from tfx_transformer.data.shards import (
    FORMAT,
    MANIFEST,
    TOKENIZER_FOLDER,
    VERSION,
    model_checksum,
    shard_name,
    write_shard,
)
from tfx_transformer.environment import environment
from tfx_transformer.files import read_json, write_json_atomic, write_text_atomic
from tfx_transformer.reporting import log
from tfx_transformer.tasks.translation.data import split_parallel_paths, split_tsv_line

PREPARATION = "preparation.json"
VALIDATION_FILES = ("validation.source", "validation.target")


@dataclasses.dataclass
class PrepareOptions:
    data: str  # parallel:SRC,TGT or tsv:PATH (plain or .gz files)
    output: str
    tokenizer: str | None = None  # a folder with sentencepiece.model (a run's tokenizer/); None: train one
    vocab_size: int = 8000
    tokenizer_sample: int = 300_000  # pairs the tokenizer is trained on
    shard_size: int = 50_000  # input lines per shard (100,000 lines keep two workers busy)
    validation: int = 1000  # pairs held out for validation
    processes: int = 0  # 0: one per CPU
    seed: int = 0
    allow_misaligned: bool = False

    def check(self):
        for name in ("vocab_size", "tokenizer_sample", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.validation < 0 or self.processes < 0:
            raise ValueError("--validation and --processes cannot be negative.")


# Reading the corpus as a stream ----------------------------------------------------------------


def input_files(spec):
    """The files a spec names: (source, target) for parallel:, (tsv,) for tsv:."""
    kind, _, rest = spec.partition(":")
    if kind == "parallel" and "," in rest:
        return split_parallel_paths(rest)
    if kind == "tsv" and rest:
        return (rest,)
    raise DataError(
        f"Cannot prepare {spec!r}: prepare reads parallel:SRC,TGT or tsv:PATH (plain or .gz)."
    )


def raw_chunks(files, size, skip_chunk=lambda index: False):
    """(first line number, rows) of the input, `size` lines at a time; rows: a list of byte lines
    per file, as read (line endings kept: `split_rows` strips them where the work is spread over
    the workers), None for a chunk that `skip_chunk(index)` says is not needed (read past, not
    kept). Files of different lengths are a DataError naming where."""
    handles = [open_binary(path) for path in files]
    try:
        number, index = 1, 0
        while True:
            parts = [list(itertools.islice(handle, size)) for handle in handles]
            counts = [len(part) for part in parts]
            if min(counts) != max(counts):
                short = files[counts.index(min(counts))]
                other = files[counts.index(max(counts))]
                raise DataError(
                    f"{short} ends at line {number + min(counts) - 1} while {other} goes on: "
                    "parallel files must be aligned line by line."
                )
            if not counts[0]:
                return
            yield number, None if skip_chunk(index) else parts
            number, index = number + counts[0], index + 1
    finally:
        for handle in handles:
            handle.close()


def split_rows(numbers, rows, files):
    """Raw lines (a list per file; `numbers`: their line numbers, in order) -> (source, target)
    text pairs, stripped; errors name the file and line."""
    sides = []
    for lines, path in zip(rows, files):
        lines = [line.rstrip(b"\r\n") for line in lines]
        if lines and numbers[0] == 1:
            lines[0] = lines[0].removeprefix(UTF8_BOM)
        sides.append(decode_lines(lines, path, numbers=numbers))
    if len(files) == 2:
        return [(source.strip(), target.strip()) for source, target in zip(*sides)]
    pairs = []
    for number, text in zip(numbers, sides[0]):
        source, target = split_tsv_line(text, files[0], number)
        pairs.append((source.strip(), target.strip()))
    return pairs


def survey(files, sample_size, seed, chunk=65536):
    """One pass over the input: its line count, and a uniform sample of `sample_size` rows for
    the tokenizer: (their line numbers in reading order, their lines per file as `raw_chunks`
    gives them); 0: only the count. Reservoir sampling: memory bound by the sample."""
    rng = np.random.default_rng(seed)
    numbers, sample = np.zeros(0, "int64"), [np.empty(0, object) for _ in files]
    count = 0
    for first, rows in raw_chunks(files, chunk):
        size = len(rows[0])
        count = first + size - 1
        if len(numbers) < min(count, sample_size):  # grown as lines come: a corpus may be small
            capacity = min(max(count, 2 * len(numbers)), sample_size)
            numbers = np.resize(numbers, capacity)
            sample = [np.resize(reservoir, capacity) for reservoir in sample]
        line_numbers = np.arange(first, count + 1)
        # Line n fills slot n - 1 while the reservoir fills, then replaces a slot drawn below n
        # when that slot is below the sample size.
        slots = np.where(line_numbers <= sample_size, line_numbers - 1,
                         (rng.random(size) * line_numbers).astype("int64"))
        drawn = np.flatnonzero(slots < sample_size)
        # Within a chunk the last line drawn into a slot is the one the slot keeps.
        kept_slots, last = np.unique(slots[drawn][::-1], return_index=True)
        kept = drawn[::-1][last]
        numbers[kept_slots] = line_numbers[kept]
        kept = kept.tolist()
        for reservoir, side in zip(sample, rows):
            reservoir[kept_slots] = np.fromiter(map(side.__getitem__, kept), object, len(kept))
    if count == 0:
        raise DataError(f"{', '.join(files)}: no lines.")
    filled = min(count, sample_size)
    order = np.argsort(numbers[:filled], kind="stable")
    return count, (numbers[order].tolist(), [reservoir[order].tolist() for reservoir in sample])


# Encoding shards in worker processes -----------------------------------------------------------

_worker_tokenizer = None


def _tokenizer_of(model_proto):
    """The worker's tokenizer for `model_proto`, loaded once."""
    global _worker_tokenizer
    if _worker_tokenizer is None or _worker_tokenizer.model_proto != model_proto:
        _worker_tokenizer = Tokenizer(model_proto)
    return _worker_tokenizer


def encode_shard(job):
    """In a worker: a shard's rows -> its file and counts, and the held-out validation pairs
    among its lines (all written to its .json, last)."""
    index, first, rows, held_out, files, folder, allow_misaligned, model_proto = job
    tokenizer = _tokenizer_of(model_proto)
    pairs = split_rows(range(first, first + len(rows[0])), rows, files)
    check_alignment(pairs, first, files, allow_misaligned)
    validation = [pairs[number - first] for number in held_out]
    for number in held_out:
        pairs[number - first] = ("", "")
    kept = [(s, t) for s, t in pairs if s and t]
    sources = tokenizer.encode([s for s, _ in kept])
    targets = tokenizer.encode([t for _, t in kept])
    write_shard(os.path.join(folder, shard_name(index)), zip(sources, targets))
    longest = np.array([max(len(s), len(t)) for s, t in zip(sources, targets)], "int64")
    histogram = np.bincount(longest) if len(longest) else np.zeros(0, "int64")
    stats = {
        "file": shard_name(index),
        "examples": len(kept),
        "skipped_empty": len(pairs) - len(kept) - len(held_out),
        "tokens": [sum(map(len, sources)), sum(map(len, targets))],
        "length_histogram": {str(k): int(v) for k, v in enumerate(histogram) if v},
        "validation": [list(pair) for pair in validation if all(pair)],
    }
    write_json_atomic(os.path.join(folder, stats_name(index)), stats)
    return stats


def check_alignment(pairs, first, files, allow_misaligned):
    """A shard whose sides look shifted (`data.alignment`) is refused, naming its lines."""
    found = find_misalignment([s for s, _ in pairs], [t for _, t in pairs])
    if found is None or allow_misaligned:
        return
    found = dataclasses.replace(found, first_line=found.first_line + first - 1,
                                last_line=found.last_line + first - 1)
    sides = files if len(files) == 2 else ("the sources", "the targets")
    raise DataError(
        f"{found.describe(*sides)}. Fix the files, or pass --allow-misaligned to prepare them "
        "as they are."
    )


def stats_name(index):
    return shard_name(index).replace(".txt.gz", ".json")


def worker_pool(processes):
    """Worker processes that encode shards: spawned (a fork would copy whatever the parent holds,
    TensorFlow's threads included) and marked as preparing data only, so that they import
    neither Keras nor TensorFlow (and would get Keras's NumPy backend if asked for a model)."""
    with environment({"KERAS_BACKEND": "numpy", DATA_ONLY_VARIABLE: "1"}):
        return multiprocessing.get_context("spawn").Pool(processes)


# The preparation -------------------------------------------------------------------------------


def input_fingerprint(files):
    return [{"path": os.path.abspath(p), "bytes": os.path.getsize(p),
             "modified": int(os.path.getmtime(p))} for p in files]


def prepare(options):
    """Prepares (or finishes preparing) `options.data` into `options.output`; returns the
    manifest."""
    options.check()
    files = input_files(options.data)
    folder = options.output
    manifest_path = os.path.join(folder, MANIFEST)
    for path in files:
        open_binary(path).close()  # a missing file or a folder: said before any work
    if os.path.exists(manifest_path):
        manifest = read_json(manifest_path)
        if manifest["options"] != settings_of(options) or manifest.get("inputs") != input_fingerprint(files):
            raise DataError(
                f"{folder} holds a finished preparation of other inputs or options "
                f"({manifest['source']}); choose another --output."
            )
        log(f"{folder} is prepared already")
        return manifest
    # Started first, the workers import (seconds each) while the input is surveyed and the
    # tokenizer trains, which leave a core idle for much of their time.
    processes = options.processes or os.cpu_count() or 1
    with worker_pool(processes) as pool:
        record, tokenizer = start_or_resume(options, files, folder)
        lines = record["lines"]
        held_out = validation_lines(lines, options.validation, options.seed)
        shard_count = -(-lines // options.shard_size)
        done = {i for i in range(shard_count) if os.path.exists(os.path.join(folder, stats_name(i)))}
        if done:
            log(f"resuming: {len(done)} of {shard_count} shards are done already")
        started = time.time()
        encode_all(pool, processes, options, files, folder, tokenizer, held_out, shard_count, done)
    stats = [read_json(os.path.join(folder, stats_name(i))) for i in range(shard_count)]
    validation = [pair for shard in stats for pair in shard["validation"]]
    for index, name in enumerate(VALIDATION_FILES):
        write_text_atomic(os.path.join(folder, name), "".join(pair[index] + "\n" for pair in validation))
    manifest = make_manifest(options, record, stats, len(validation))
    write_json_atomic(manifest_path, manifest)
    elapsed = time.time() - started
    log(f"encoded {manifest['examples']:,} pairs in {elapsed:.1f} s "
        f"({manifest['examples'] / max(elapsed, 1e-9):,.0f} pairs/s)")
    return manifest


def settings_of(options):
    """The options that decide what a preparation writes (not where, nor with how many
    processes)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ("output", "processes")}


def start_or_resume(options, files, folder):
    """(preparation record, tokenizer): the saved ones when `folder` holds this same preparation
    unfinished; new ones (the tokenizer trained on a sample) in an empty or new folder."""
    settings = settings_of(options)
    path = os.path.join(folder, PREPARATION)
    if os.path.exists(path):
        record = read_json(path)
        if record["options"] != settings or record["inputs"] != input_fingerprint(files):
            raise DataError(
                f"{folder} holds an unfinished preparation of other inputs or options "
                f"({record['options']['data']}); finish it with its own arguments, or choose "
                "another --output."
            )
        return record, Tokenizer.load(os.path.join(folder, TOKENIZER_FOLDER))
    if os.path.isdir(folder) and os.listdir(folder):
        raise DataError(f"{folder} exists and is not a preparation folder; choose another --output.")
    if options.tokenizer:
        tokenizer = Tokenizer.load(options.tokenizer)
        lines, _ = survey(files, 0, options.seed)
    else:
        lines, (numbers, rows) = survey(files, options.tokenizer_sample, options.seed)
        texts = [side for pair in split_rows(numbers, rows, files) for side in pair]
        log(f"training the tokenizer on {len(numbers):,} of {lines:,} lines")
        tokenizer = Tokenizer.train(texts, options.vocab_size, seed=options.seed)
    tokenizer.save(os.path.join(folder, TOKENIZER_FOLDER))
    record = {"options": settings, "inputs": input_fingerprint(files), "lines": lines,
              "tokenizer_sha256": model_checksum(tokenizer.model_proto),
              "vocab_size": tokenizer.vocab_size}
    write_json_atomic(path, record)
    return record, tokenizer


def validation_lines(lines, count, seed):
    """The input line numbers held out for validation (at most a tenth of the lines)."""
    count = min(count, lines // 10)
    chosen = np.random.default_rng([seed, 1]).choice(lines, size=count, replace=False) + 1
    return set(chosen.tolist())


def encode_all(pool, processes, options, files, folder, tokenizer, held_out, shard_count, done):
    """Reads the input once, a shard's lines at a time, and has the `pool`'s `processes`
    workers encode each unfinished shard (at most two per worker in flight)."""
    pending = []
    for index, (first, rows) in enumerate(
        raw_chunks(files, options.shard_size, skip_chunk=lambda index: index in done)
    ):
        if rows is None:
            continue
        last = first + len(rows[0]) - 1
        mine = sorted(n for n in held_out if first <= n <= last)
        job = (index, first, rows, mine, files, folder, options.allow_misaligned,
               tokenizer.model_proto)
        pending.append(pool.apply_async(encode_shard, (job,)))
        while len(pending) > 2 * processes:
            report(pending.pop(0).get(), shard_count)
    while pending:
        report(pending.pop(0).get(), shard_count)


def report(stats, shard_count):
    log(f"  {stats['file']}: {stats['examples']:,} pairs ({shard_count} shards in all)")


def make_manifest(options, record, stats, validation_examples):
    histogram = {}
    for shard in stats:
        for length, count in shard["length_histogram"].items():
            histogram[length] = histogram.get(length, 0) + count
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": "translation",
        "unit": "pair",
        "source": options.data,
        "shards": [{"file": s["file"], "examples": s["examples"]} for s in stats],
        "examples": sum(s["examples"] for s in stats),
        "skipped_empty": sum(s["skipped_empty"] for s in stats),
        "validation_examples": validation_examples,
        "validation_files": list(VALIDATION_FILES),
        "tokens": [sum(s["tokens"][0] for s in stats), sum(s["tokens"][1] for s in stats)],
        "length_histogram": dict(sorted(histogram.items(), key=lambda item: int(item[0]))),
        "tokenizer": {"folder": TOKENIZER_FOLDER, "sha256": record["tokenizer_sha256"],
                      "vocab_size": record["vocab_size"]},
        "lines": record["lines"],
        "inputs": record["inputs"],
        "options": record["options"],
    }
