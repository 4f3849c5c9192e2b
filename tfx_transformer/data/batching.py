"""Batches by a token budget: length buckets, batches filled to the budget at their longest
member, 0-padded int32 arrays; or packed rows, several examples one after another in each row of
one fixed width. Done in NumPy ahead of an epoch, so the number of batches and the padding are
known before training starts (progress bar, resume and distribution want them)."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchShapes:
    """How a task shapes its batches.

    `multiple`: every width is rounded up to it (XLA's tiles like multiples of 8).
    `fixed`: one shape per length bucket, so that a compiled step sees a bounded set of shapes
    (JAX compiles once per shape): every array of a batch is padded to its bucket's width and
    to the bucket's row count, `batch_tokens // width` per replica, with empty rows.
    `replicas`: with `fixed`, a batch is split over that many devices; it holds `replicas` times
    the rows, so that --batch-tokens stays the budget of one device.
    `packed`: a task that can pack packs its training examples into rows of one width for the
    run (`pack_indices`), `rows` of them a batch: one shape, and little padding.
    """

    multiple: int = 1
    fixed: bool = False
    replicas: int = 1
    packed: bool = False

    def packed_width(self, longest):
        """`packed`: `longest` tokens rounded up to the widths rows may take (`multiple`)."""
        return -(-longest // self.multiple) * self.multiple

    def widths(self, max_length):
        """`fixed`: the widths batches take (one per bucket), none over `max_length`."""
        return sorted({min(-(-b // self.multiple) * self.multiple, max_length)
                       for b in bucket_boundaries(max_length)})

    def rows(self, batch_tokens, width):
        """`fixed`: the rows of a batch `width` wide."""
        return max(1, batch_tokens // width) * self.replicas

    def shape_for(self, longest, batch_tokens, max_length):
        """(rows, width) of the batch whose longest member has `longest` tokens; None (each
        array as wide as its rows need) unless `fixed`."""
        if not self.fixed:
            return None
        widths = self.widths(max_length)
        width = widths[min(int(np.searchsorted(widths, longest)), len(widths) - 1)]
        return self.rows(batch_tokens, width), width


def bucket_boundaries(max_length, smallest=8, growth=1.25):
    """Bucket upper bounds from `smallest` to `max_length`, growing ~25% each."""
    bounds, bound = [], smallest
    while bound < max_length:
        bounds.append(bound)
        bound = max(bound + 1, int(bound * growth + 0.5))
    return bounds + [max_length]


def batch_indices(lengths, batch_tokens, max_length, shuffle_seed=None, sort_by_length=True,
                  shapes=None):
    """Groups example indices into batches of similar length, each within `batch_tokens`
    padded tokens. Examples fall into length buckets (`bucket_boundaries`); a batch takes a
    bucket's members until one more would pass the budget at the batch's longest length.
    With `sort_by_length` the members are sorted by length first, so batches are as little
    padded as the lengths allow; without, they stay in shuffled order, so batches mix lengths
    (and whatever goes with length) more. Shuffled (examples before bucketing, which orders
    equal lengths, then the batches) when `shuffle_seed` is given; in bucket order otherwise.
    With `shapes.fixed` (a `BatchShapes`) the buckets are its widths and each batch takes its
    bucket's fixed row count of members (the last of a bucket fewer)."""
    fixed = shapes is not None and shapes.fixed
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        order = rng.permutation(order)
    bounds = shapes.widths(max_length) if fixed else bucket_boundaries(max_length)
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
        if fixed:
            size = shapes.rows(batch_tokens, bound)
            chunks.extend(members[i : i + size] for i in range(0, len(members), size))
            continue
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


def pack_indices(lengths, width, rows, shuffle_seed=None):
    """Packs examples into rows of `width` tokens on every side, `rows` rows a batch.

    `lengths`: [N, sides] ints, each example's length on each side (source and target, say),
    none over `width`. Returns batches as lists of rows, a row as the list of the example
    indices it holds, in order; every example is in exactly one row. Rows are filled best fit
    decreasing (the longest examples first, each into a row where every side fits, of the least
    room left on its fullest side), then shuffled into batches; the last batch may hold fewer
    rows. `shuffle_seed` orders examples of equal length at random (so that rows differ from
    epoch to epoch) and shuffles the rows; without it, equal lengths keep the input order and
    rows the order they were opened in.
    """
    if not len(lengths):
        return []
    lengths = np.asarray(lengths, dtype=np.int64).reshape(len(lengths), -1)
    if lengths.max() > width:
        raise ValueError(f"Examples of up to {lengths.max()} tokens do not fit rows of {width}.")
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = order[np.argsort(-lengths[order].max(axis=1), kind="stable")]
    room = []  # per row: its room on every side (Python ints: NumPy per row is slower here)
    by_room = [[] for _ in range(width + 1)]  # least room of any side -> open rows with it
    packed = []
    for index in order.tolist():
        need = lengths[index].tolist()
        row = _fitting_row(by_room, room, need)
        if row is None:
            row = len(packed)
            packed.append([])
            room.append([width] * len(need))
        else:
            by_room[min(room[row])].remove(row)
        packed[row].append(index)
        room[row] = [left - used for left, used in zip(room[row], need)]
        by_room[min(room[row])].append(row)
    if rng is not None:
        packed = [packed[i] for i in rng.permutation(len(packed))]
    return [packed[i : i + rows] for i in range(0, len(packed), rows)]


def packing_width(lengths, max_length, shapes, d_model, sample=20_000):
    """The row width (a multiple of `shapes.multiple`) at which examples of `lengths` ([N,
    sides] ints, as `pack_indices` takes) packed into rows cost a model `d_model` wide least per
    real token.

    Rows at least as wide as the longest example (up to `max_length`) and at most twice that:
    wider rows leave less padding (more ways to fill them), but every token attends over its
    row's width, which costs about width / (5 d_model) of what the rest of a layer costs per
    token (attention 4 W d FLOPs per sublayer against 24 d^2 for the projections and the
    feed-forward network). Each width's padding is that of packing a fixed sample of the
    examples. On the built-in numbers task (pairs of up to 20 tokens, the tiny preset, this CPU)
    it picks 32: 18,309-19,555 target tokens/s against 16,368-16,617 at 24 and 13,529-13,798 at
    64.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(len(lengths), -1)
    widest = shapes.packed_width(max_length)
    narrowest = shapes.packed_width(min(max_length, int(lengths.max(initial=1))))  # all examples'
    if len(lengths) > sample:
        lengths = lengths[np.random.default_rng(0).choice(len(lengths), sample, replace=False)]
    real = lengths.sum()

    def cost(width):
        rows = sum(len(batch) for batch in pack_indices(lengths, width, 1))
        padding = 1 - real / (rows * width * lengths.shape[1])
        return (1 + width / (5 * d_model)) / (1 - padding)

    candidates = range(narrowest, min(widest, 2 * narrowest) + 1, shapes.multiple)
    return min(candidates, key=cost)


def _fitting_row(by_room, room, need, tries=8):
    """An open row of the least room that fits `need` on every side. A row whose least room is
    `need`'s largest or more always fits; below that, a few rows of each room are tried."""
    for least_room in range(min(need), len(by_room)):
        for row in by_room[least_room][-tries:]:
            if all(left >= used for left, used in zip(room[row], need)):
                return row
    return None


def padding_fraction(arrays):
    """The share of zeros (padding) in int arrays."""
    real = sum(int((a != 0).sum()) for a in arrays)
    total = sum(a.size for a in arrays)
    return 1.0 - real / total if total else 0.0


def pad_rows(rows, multiple=1, shape=None):
    """Lists of ids -> int32 [len(rows), width], 0-padded on the right; the width is the longest
    row's length rounded up to `multiple`. `shape` (rows, width) pads to that instead, with
    empty rows below."""
    longest = max(len(r) for r in rows)
    if shape is None:
        shape = (len(rows), -(-longest // multiple) * multiple)
    if shape[0] < len(rows) or shape[1] < longest:
        raise ValueError(f"{len(rows)} rows of up to {longest} ids do not fit shape {shape}.")
    padded = np.zeros(shape, "int32")
    for row, ids in enumerate(rows):
        padded[row, : len(ids)] = ids
    return padded
