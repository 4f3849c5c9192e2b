"""Parallel text: the data specs, their readers, the built-in number-words task, encoding to
token ids, and batches by a token budget (see `tfx_transformer.data.batching`).

Specs: `builtin:numbers` (optionally `builtin:numbers:en-fr`), `builtin:algorithmic:TASK`
(copy, reverse or addition; see `algorithmic`), `tsv:PATH`,
`parallel:SRC_PATH,TGT_PATH`, `tfds:NAME` (needs tensorflow-datasets and its data).
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import os

import numpy as np

from tfx_transformer.data import (
    BatchShapes,
    DataError,
    batch_indices,
    pack_indices,
    packing_width,
    pad_rows,
    padding_fraction,
    read_lines,
)
from tfx_transformer.data.alignment import find_misalignment
from tfx_transformer.files import cache_folder, read_json, write_json_atomic
from tfx_transformer.tasks.translation.algorithmic import ALGORITHMIC_TASKS, algorithmic_pairs
from tfx_transformer.tokens import END_ID, START_ID


@dataclasses.dataclass
class ParallelText:
    sources: list
    targets: list
    skipped_empty: int = 0
    origin: str = ""
    misalignment: str | None = None  # what `data.alignment` found wrong with the file's lines
    bands: list | None = None  # a length band per pair (builtin:algorithmic), scored apart
    unit = "pair"

    def __len__(self):
        return len(self.sources)

    def subset(self, indices):
        return ParallelText(
            [self.sources[i] for i in indices], [self.targets[i] for i in indices], 0, self.origin,
            self.misalignment,  # found in the whole file: holds for the parts held out of it
            None if self.bands is None else [self.bands[i] for i in indices],
        )


# Readers ---------------------------------------------------------------------------------------


def _keep_pairs(pairs, origin, misalignment=None):
    sources, targets, skipped = [], [], 0
    for source, target in pairs:
        source, target = source.strip(), target.strip()
        if not source or not target:
            skipped += 1
            continue
        sources.append(source)
        targets.append(target)
    if not sources:
        raise DataError(f"{origin}: no usable pairs (every pair had an empty side).")
    return ParallelText(sources, targets, skipped, origin, misalignment)


def read_tsv(path):
    """source<TAB>target per line; blank lines and pairs with an empty side are skipped."""
    pairs = [split_tsv_line(line, path, number)
             for number, line in enumerate(read_lines(path), start=1)]
    found = find_misalignment([source for source, _ in pairs], [target for _, target in pairs])
    return _keep_pairs(
        pairs, f"tsv:{path}", found and f"{path}: {found.describe('the sources', 'the targets')}"
    )


def split_tsv_line(line, path, number):
    """(source, target) of line `number` of a TSV file; ("", "") for a blank line."""
    if not line.strip():
        return "", ""
    if "\t" not in line:
        raise DataError(f"{path}:{number}: no tab between source and target: {line[:80]!r}")
    columns = line.count("\t") + 1
    if columns > 2:
        # Corpora often come with more columns (Tatoeba's pairs with their attribution, say).
        raise DataError(
            f"{path}:{number}: more than one tab ({columns} columns); expected "
            f"source<TAB>target. To train on the first two columns: cut -f1,2 {path} > pairs.tsv"
        )
    source, target = line.split("\t")
    return source, target


def read_parallel(source_path, target_path, allow_misaligned=False):
    """Two aligned files, line i of one translating line i of the other. Files of different
    lengths are refused, naming where they look shifted; with `allow_misaligned`, their first
    min(lengths) lines are paired (and the text says what was wrong in `misalignment`)."""
    sources = read_lines(source_path)
    targets = read_lines(target_path)
    found = find_misalignment(sources, targets)
    where = found and found.describe(source_path, target_path)
    if len(sources) != len(targets):
        problem = (
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: "
            "parallel files must be aligned line by line" + (f"; {where}" if where else "")
        )
        if not allow_misaligned:
            raise DataError(
                f"{problem}. Fix the files, or pass --allow-misaligned to train on the first "
                f"{min(len(sources), len(targets))} lines of each."
            )
        where = problem
    return _keep_pairs(zip(sources, targets), f"parallel:{source_path},{target_path}", where)


def read_tfds(name, split):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"tfds:{name} needs tensorflow-datasets: pip install 'tfx_transformer[tfds]'."
        ) from None
    try:
        dataset = tfds.load(
            name, split=split, as_supervised=True, data_dir=os.environ.get("TFDS_DATA_DIR")
        )
    except Exception as error:  # tfds raises many kinds: unknown name, no network, no split
        # Its first line says why; the rest can be the names of all ~500 datasets it knows.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise DataError(f"tfds:{name} [{split}] could not be loaded: {reason}") from None
    pairs = [
        (source.decode("utf-8"), target.decode("utf-8"))
        for source, target in tfds.as_numpy(dataset)
    ]
    return _keep_pairs(pairs, f"tfds:{name}[{split}]")


# The built-in task -------------------------------------------------------------------------------


NUMBERS_LIMIT = 1_000_000
NUMBERS_SPLITS = {"train": 40_000, "validation": 500, "test": 1_000}


def numbers_split(split, language_pair="en-fr", seed=0, sizes=None):
    """English number words -> French (or another num2words pair), disjoint splits by number.

    Validation and test numbers are drawn uniformly from [0, 1,000,000) first. Training takes
    every other number below 1,000 (the words everything else is built from) three times (below
    100: ten times), then
    half of its rest uniformly and half with each digit zero at even odds, so that round parts ("seventy
    thousand and six") are as common in training as their rules are distinct.
    """
    sizes = {**NUMBERS_SPLITS, **(sizes or {})}
    if split not in sizes:
        raise DataError(f"builtin:numbers has the splits {sorted(sizes)}; received {split!r}.")
    _language_pair(language_pair)
    rng = np.random.default_rng(seed)
    held_out = rng.choice(NUMBERS_LIMIT, size=sizes["test"] + sizes["validation"], replace=False)
    if split == "test":
        numbers = held_out[: sizes["test"]]
    elif split == "validation":
        numbers = held_out[sizes["test"] :]
    else:
        numbers = _training_numbers(rng, set(held_out.tolist()), sizes["train"])
    sources, targets = cached_pairs(
        f"numbers-{language_pair}-{split}-seed{seed}-"
        + "-".join(f"{name}{size}" for name, size in sorted(sizes.items())),
        lambda: [number_words(n, language_pair) for n in numbers],
    )
    return ParallelText(sources, targets, 0, f"builtin:numbers:{language_pair}[{split}]")


def cached_pairs(name, make_pairs):
    """(sources, targets) from the cache folder (`files.cache_folder`), or from `make_pairs` (a
    list of (source, target)) and then kept there: num2words takes ~8 s for the default training
    split, which every run reads. The file's name carries a digest of this module and the
    versions of num2words and NumPy (whose generators draw the numbers), so a changed generator
    never reads what an older one made. A cache that cannot be read or written is passed by: the
    pairs are made again."""
    folder = cache_folder()
    path = None
    if folder:
        versions = f"num2words {importlib.metadata.version('num2words')}, numpy {np.__version__}"
        key = hashlib.sha256(_module_digest() + versions.encode())
        path = os.path.join(folder, "builtin", f"{name}-{key.hexdigest()[:16]}.json")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = read_json(path)
            sources, targets = list(cached["sources"]), list(cached["targets"])
            if len(sources) == len(targets) and all(isinstance(t, str) for t in sources + targets):
                return sources, targets
    pairs = make_pairs()
    sources, targets = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    if path:
        with contextlib.suppress(OSError):
            write_json_atomic(path, {"sources": sources, "targets": targets})
    return sources, targets


@functools.cache
def _module_digest():
    with open(__file__, "rb") as module:
        return hashlib.sha256(module.read()).digest()


def algorithmic_split(name, split, seed=0, sizes=None):
    """One split of `builtin:algorithmic:NAME`, each pair with its length band (see
    `algorithmic`)."""
    sources, targets, bands = algorithmic_pairs(name, split, seed, sizes)
    return ParallelText(sources, targets, 0, f"builtin:algorithmic:{name}[{split}]", bands=bands)


def number_words(number, language_pair="en-fr"):
    """(source words, target words) of one number."""
    from num2words import num2words

    source_lang, target_lang = _language_pair(language_pair)
    return num2words(int(number), lang=source_lang), num2words(int(number), lang=target_lang)


def _training_numbers(rng, held_out, count):
    # The numbers below 1,000 come three times and those below 100 ten times: alone
    # ("one" -> "un") they are otherwise rare beside the same words inside larger numbers
    # ("one thousand" -> "mille"), and a model learns to copy the larger numbers' habits.
    small = [n for n in range(1000) if n not in held_out]
    chosen = (small * 3 + [n for n in small if n < 100] * 7)[:count]
    taken = set(chosen) | held_out
    digits = 6  # numbers below NUMBERS_LIMIT
    while len(chosen) < count:
        batch = rng.integers(1000, NUMBERS_LIMIT, size=count)
        sparse_digits = rng.integers(1, 10, size=(count, digits)) * (rng.random((count, digits)) < 0.5)
        sparse = sparse_digits @ (10 ** np.arange(digits))
        candidates = np.where(np.arange(count) % 2 == 0, batch, sparse)
        for n in candidates.tolist():
            if n >= 1000 and n not in taken and len(chosen) < count:
                taken.add(n)
                chosen.append(n)
    return chosen


def _language_pair(pair):
    from num2words import CONVERTER_CLASSES

    parts = pair.split("-")
    if len(parts) != 2 or not all(p in CONVERTER_CLASSES for p in parts):
        raise DataError(
            f"builtin:numbers takes a language pair like en-fr of num2words languages; "
            f"received {pair!r}."
        )
    return parts


def split_parallel_paths(paths):
    """SRC,TGT -> (SRC, TGT). A path may hold commas itself: the spec splits at the one comma
    that leaves the most existing files on its sides (so a missing file is the one named)."""
    candidates = [(paths[:i], paths[i + 1:]) for i, c in enumerate(paths)
                  if c == "," and 0 < i < len(paths) - 1]
    if not candidates:
        raise DataError(f"parallel:{paths}: give a source and a target path, SRC,TGT.")
    existing = [sum(map(os.path.isfile, pair)) for pair in candidates]
    best = [pair for pair, count in zip(candidates, existing) if count == max(existing)]
    if len(best) == 1:
        return best[0]
    if max(existing) == 2:
        raise DataError(
            f"parallel:{paths} splits into existing source and target files in {len(best)} "
            "ways; rename the files so that their paths hold no comma."
        )
    raise DataError(f"parallel:{paths}: no comma splits it into two existing files (SRC,TGT).")


def load_spec(spec, split="train", seed=0, allow_misaligned=False):
    """Reads a data spec. `split` matters for builtin and tfds, where one spec names several;
    `allow_misaligned`: see `read_parallel`."""
    kind, _, rest = spec.partition(":")
    if kind == "builtin":
        name, _, variant = rest.partition(":")
        if name == "algorithmic":
            return algorithmic_split(variant, split, seed)
        if name != "numbers":
            raise DataError(
                f"Unknown built-in dataset {name!r}; the built-in ones are 'numbers' and "
                f"'algorithmic:{'|'.join(ALGORITHMIC_TASKS)}'."
            )
        return numbers_split(split, variant or "en-fr", seed)
    if kind == "tsv" and rest:
        return read_tsv(rest)
    if kind == "parallel" and "," in rest:
        source_path, target_path = split_parallel_paths(rest)
        return read_parallel(source_path, target_path, allow_misaligned)
    if kind == "tfds" and rest:
        return read_tfds(rest, split)
    raise DataError(
        f"Unknown data spec {spec!r}: use builtin:numbers, builtin:algorithmic:TASK, tsv:PATH, "
        "parallel:SRC,TGT or tfds:NAME."
    )


# Tokenized examples and batching ----------------------------------------------------------------


@dataclasses.dataclass
class Encoded:
    """Token ids ready for the model: source [.. + end], decoder input [start + ..], labels [.. + end]."""

    sources: list
    targets: list
    dropped: int = 0
    truncated: int = 0


def encode_pairs(tokenizer, data, max_length, long_pairs="drop"):
    """Tokenizes; pairs longer than `max_length` tokens (with the end token) are dropped or
    truncated, and counted."""
    return limit_pairs(
        zip(tokenizer.encode(data.sources), tokenizer.encode(data.targets)), max_length, long_pairs
    )


def limit_pairs(id_pairs, max_length, long_pairs="drop"):
    """(source ids, target ids) pairs -> `Encoded`: the end token appended, pairs longer than
    `max_length` dropped or truncated (`long_pairs`), and counted."""
    if long_pairs not in ("drop", "truncate"):
        raise ValueError(f"`long_pairs` must be 'drop' or 'truncate'. Received: {long_pairs!r}")
    sources, targets, dropped, truncated = [], [], 0, 0
    for source, target in id_pairs:
        source, target = list(source) + [END_ID], list(target) + [END_ID]
        if len(source) > max_length or len(target) > max_length:
            if long_pairs == "drop":
                dropped += 1
                continue
            truncated += 1
            source = source[: max_length - 1] + [END_ID]
            target = target[: max_length - 1] + [END_ID]
        sources.append(source)
        targets.append(target)
    return Encoded(sources, targets, dropped, truncated)


def limited_histogram(longest, max_length, long_pairs="drop"):
    """{batching length (`make_batches`: the longer side with its end token): pairs} after
    `limit_pairs`, from {longer side's pieces: pairs}."""
    limited = {}
    for pieces, count in longest.items():
        length = int(pieces) + 1
        if length > max_length:
            if long_pairs == "drop":
                continue
            length = max_length
        limited[length] = limited.get(length, 0) + int(count)
    return limited


def make_batches(encoded, batch_tokens, max_length, shuffle_seed=None, shapes=BatchShapes(),
                 packed_width=None):
    """Batches of similar length within `batch_tokens` padded tokens (see `batch_indices`).

    Returns a list of
    (source [B, S], decoder input [B, T], labels [B, T]) int32 arrays, shuffled by batch when
    `shuffle_seed` is given, and the fraction of padding in sources and labels. `shapes` (a
    `BatchShapes`) rounds the widths, or fixes one shape per bucket, or packs the pairs into
    rows of `packed_width` tokens (`pack_batches`; None: `packing_width`'s for a model 512 wide).
    """
    if shapes.packed:
        width = packed_width or packing_width(pair_lengths(encoded), max_length, shapes, 512)
        return pack_batches(encoded, batch_tokens, width, shuffle_seed, shapes)
    lengths = [max(len(s), len(t)) for s, t in zip(encoded.sources, encoded.targets)]
    chunks = batch_indices(lengths, batch_tokens, max_length, shuffle_seed, shapes=shapes)
    batches = []
    for chunk in chunks:
        shape = shapes.shape_for(max(lengths[i] for i in chunk), batch_tokens, max_length)
        batches.append(_pad_batch(encoded, chunk, shapes.multiple, shape))
    return batches, padding_fraction([a for b in batches for a in (b[0], b[-1])])


def pair_lengths(encoded):
    """[(source length, target length)] of encoded pairs: what a packed row must fit."""
    return [(len(s), len(t)) for s, t in zip(encoded.sources, encoded.targets)]


def pack_batches(encoded, batch_tokens, width, shuffle_seed=None, shapes=BatchShapes()):
    """Pairs packed several to a row (`data.pack_indices`), every batch of one shape:
    `shapes.rows` rows of `width` tokens (the last batch filled with empty rows).

    Returns a list of (source [B, S], decoder input [B, T], source segment ids [B, S], target
    segment ids [B, T], labels [B, T]) int32 arrays (segment ids: 1, 2, ... for a row's pairs,
    0 on padding; what `Transformer` takes as "source_segment_ids" and "target_segment_ids"),
    and the fraction of padding in sources and labels.
    """
    lengths = pair_lengths(encoded)
    rows = shapes.rows(batch_tokens, width)
    batches = [
        _pack_rows(encoded, batch, (rows, width))
        for batch in pack_indices(lengths, width, rows, shuffle_seed)
    ]
    return batches, padding_fraction([a for b in batches for a in (b[0], b[-1])])


def _pack_rows(encoded, batch, shape):
    sources, decoder_inputs, source_segments, target_segments, labels = (
        [] for _ in range(5)
    )
    for row in batch:
        sources.append([i for p in row for i in encoded.sources[p]])
        decoder_inputs.append([i for p in row for i in [START_ID] + encoded.targets[p][:-1]])
        labels.append([i for p in row for i in encoded.targets[p]])
        source_segments.append([n for n, p in enumerate(row, 1) for _ in encoded.sources[p]])
        target_segments.append([n for n, p in enumerate(row, 1) for _ in encoded.targets[p]])
    rows = (sources, decoder_inputs, source_segments, target_segments, labels)
    return tuple(pad_rows(side, shape=shape) for side in rows)


def _pad_batch(encoded, indices, multiple, shape=None):
    sources = [encoded.sources[i] for i in indices]
    targets = [encoded.targets[i] for i in indices]
    decoder_inputs = [[START_ID] + t[:-1] for t in targets]
    return tuple(pad_rows(rows, multiple, shape) for rows in (sources, decoder_inputs, targets))
