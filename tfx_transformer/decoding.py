"""Batched greedy and beam-search decoding with a key/value cache, in `keras.ops` loops.

Shapes stay static inside the loops (the cache is preallocated to `max_length`, beams live in the
batch axis), so the same code traces once under `tf.function` or `jax.jit` and runs inside a
SavedModel. `use_cache=False` recomputes the whole decoder each step; it exists as the reference
that the cached path must reproduce.

Both return (tokens, scores): tokens [B, L] int32 (L = max_length; with `max_length_factor`, at
most that times the source's width, which keeps the cache of a batch of short sentences short),
the generated ids after the start
token, including the end token where one was produced and 0 (padding) after it; scores [B]
float32, the sum of the tokens' log-probabilities (beam search: divided by the GNMT length
penalty).
"""

import math

import keras
from keras import ops

from tfx_transformer.layers.cache import write_positions

# Log-probability of a continuation that must never be chosen. Scores are float32 throughout, so
# a large finite value is safe here and, unlike -inf, never produces NaN in the arithmetic below.
_IMPOSSIBLE = -1e9
# What the Translator, the export and the translate command cut a translation at, in source tokens
# (Marian's default max-length-factor): a model that falls into repeating itself stops there
# instead of at max_length, and so does the batch it holds up.
DEFAULT_MAX_LENGTH_FACTOR = 3.0


def gnmt_length_penalty(length, alpha):
    """((5 + length) / 6) ** alpha (Wu et al. 2016); alpha = 0 disables length normalization."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def _resolve(model, max_length, start_id, end_id):
    config = model.model_config
    max_length = config.max_length if max_length is None else int(max_length)
    if not 0 < max_length <= config.max_length and config.position == "learned":
        raise ValueError(
            f"`max_length` must be in [1, {config.max_length}] for a model with learned "
            f"positions. Received: max_length={max_length}"
        )
    if max_length <= 0:
        raise ValueError(f"`max_length` must be positive. Received: max_length={max_length}")
    start_id = config.start_id if start_id is None else start_id
    end_id = config.end_id if end_id is None else end_id
    return max_length, start_id, end_id


def _output_lengths(model, source_ids, max_length, max_length_factor, prefix_ids):
    """(each row's longest output [B] int32 or None, the positions the loop's buffers and cache
    hold). Without `max_length_factor`: (None, max_length). With it, a row ends at that many
    times its real tokens (its end token included), rounded up and at most `max_length`, and
    the buffers hold the limit the source's width allows (a tensor where the width is known
    only when the graph runs; `max_length` with a forced prefix, which may be longer)."""
    if max_length_factor is None:
        return None, max_length
    if not isinstance(max_length_factor, (int, float)) or max_length_factor <= 0:
        raise ValueError(
            f"`max_length_factor` must be a positive number. Received: {max_length_factor!r}"
        )

    def limit(tokens):
        scaled = ops.cast(ops.ceil(ops.cast(tokens, "float32") * float(max_length_factor)), "int32")
        return ops.minimum(scaled, max_length)

    real = ops.sum(ops.cast(ops.not_equal(source_ids, model.model_config.pad_id), "int32"), axis=1)
    width = ops.shape(source_ids)[1]
    if prefix_ids is not None:
        buffer_length = max_length
    elif isinstance(width, int):  # known now (eager, jax.jit): a Python int keeps shapes static
        buffer_length = min(max_length, math.ceil(width * float(max_length_factor)))
    else:
        buffer_length = limit(width)
    return limit(real), buffer_length


class _Stepper:
    """Next-token log-probabilities for rows of a token buffer, cached or recomputed in full.

    `rows` holds the per-row tensors a step reads besides the tokens and the self-attention
    cache (the source mask, the cross-attention cache or the encoder output, the forced
    prefix): a loop carries it, so that a batch that drops its settled sources can select from
    it as it does from the cache.
    """

    def __init__(self, model, source_ids, repeats, max_length, use_cache, prefix_ids=None):
        self.model = model
        self.use_cache = use_cache
        self.max_length = max_length
        encoder_output, source_mask = model.encode(source_ids, training=False)
        if repeats > 1:  # beams sit next to each other in the batch axis: row b * K + k
            encoder_output = ops.repeat(encoder_output, repeats, axis=0)
            source_mask = ops.repeat(source_mask, repeats, axis=0)
        self.rows = {"source_mask": source_mask}
        if use_cache:
            self.self_cache, cross_cache = model.start_decoding(encoder_output, max_length)
            if cross_cache is not None:  # a model may keep no cross-attention cache
                self.rows["cross_cache"] = cross_cache
        else:
            self.self_cache = ops.zeros((), dtype="float32")  # unused loop variable
            self.rows["encoder_output"] = encoder_output
        vocab_size = model.model_config.vocab_size
        pad_id = model.model_config.pad_id
        # Padding (and the start token) are never generated.
        banned = ops.logical_or(
            ops.equal(ops.arange(vocab_size), pad_id),
            ops.equal(ops.arange(vocab_size), model.model_config.start_id),
        )
        self.banned = banned  # (V,)
        if prefix_ids is not None:
            self.rows["prefix"] = ops.repeat(_check_prefix(model, prefix_ids, max_length), repeats, axis=0)

    def log_probs(self, tokens, index, self_cache, rows):
        """tokens [N, L + 1] with positions 0..index filled, `rows` as `self.rows` (or the
        same rows of it) -> ([N, V] log-probs, cache)."""
        if self.use_cache:
            current = ops.slice(tokens, [0, index], [ops.shape(tokens)[0], 1])  # (N, 1)
            logits, self_cache = self.model.decode_step(
                current, index, self_cache, rows.get("cross_cache"), rows["source_mask"]
            )
        else:
            all_logits = self.model.decode(
                tokens[:, : self.max_length], rows["encoder_output"], rows["source_mask"],
                training=False,
            )  # (N, L, V)
            logits = ops.take(all_logits, index, axis=1)  # (N, V)
        log_probs = ops.log_softmax(logits, axis=-1)
        log_probs = ops.where(self.banned, _IMPOSSIBLE, log_probs)
        return self._force_prefix(log_probs, index, rows.get("prefix")), self_cache

    def _force_prefix(self, log_probs, index, prefix):
        """A row whose prefix holds a token at `index` may produce only that token (scored at
        its log-probability); past its prefix (0-padded) it decodes freely."""
        if prefix is None:
            return log_probs
        length = prefix.shape[1]
        column = ops.take(prefix, ops.minimum(index, length - 1), axis=1)  # (N,)
        active = ops.logical_and(index < length, ops.not_equal(column, self.model.model_config.pad_id))
        allowed = ops.equal(
            ops.expand_dims(ops.arange(ops.shape(log_probs)[1]), 0), ops.expand_dims(column, 1)
        )  # (N, V)
        forced = ops.where(allowed, log_probs, _IMPOSSIBLE)
        return ops.where(ops.expand_dims(active, 1), forced, log_probs)


def _check_prefix(model, prefix_ids, max_length):
    """[B, P] int target prefixes (0-padded on the right), P in [1, max_length]."""
    prefix_ids = ops.convert_to_tensor(prefix_ids, dtype="int32")
    if len(prefix_ids.shape) != 2 or not 0 < prefix_ids.shape[1] <= max_length:
        raise ValueError(
            f"`prefix_ids` must be [batch, P] with 0 < P <= max_length={max_length}. "
            f"Received shape: {tuple(prefix_ids.shape)}"
        )
    return prefix_ids


def _write_column(tokens, index, column):
    """tokens[:, index] = column, with a dynamic index."""
    return write_positions(tokens, ops.expand_dims(ops.cast(column, "int32"), 1), index, axis=1)


def _start_tokens(rows, max_length, start_id):
    tokens = ops.zeros((rows, max_length + 1), dtype="int32")
    return _write_column(tokens, 0, ops.full((rows,), start_id, dtype="int32"))


def greedy_decode(
    model, source_ids, max_length=None, start_id=None, end_id=None, use_cache=True, prefix_ids=None,
    max_length_factor=None,
):
    """Most likely token at each step, for every source row at once. `prefix_ids` [B, P]
    (0-padded) forces each row's first tokens; their log-probabilities count in the score.
    `max_length_factor`: a row's output is also cut at that many times its source tokens."""

    def most_likely(log_probs, index, rows):
        return ops.argmax(log_probs, axis=-1)

    return _decode_row_by_row(
        model, source_ids, most_likely, max_length, start_id, end_id, use_cache, prefix_ids,
        max_length_factor,
    )


def sample_decode(
    model,
    source_ids,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    seed=0,
    max_length=None,
    prefix_ids=None,
    use_cache=True,
    max_length_factor=None,
):
    """One sampled translation per source row (back-translation, varied outputs).

    Each step draws from softmax(log-probabilities / temperature), restricted to the `top_k`
    most likely tokens (0: no limit) and to the smallest set of them whose probability reaches
    `top_p` (nucleus sampling). The draw for (seed, step, row) comes from a counter-based hash,
    not from a random state, so a seed gives the same samples eagerly, under tf.function and
    under jax.jit, and a row's sample depends on its place in the batch, not on the other rows.
    Scores are the model's own (untempered) log-probabilities of the sampled tokens.
    `max_length_factor` as in `greedy_decode`.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"`temperature` must be a positive number. Received: temperature={temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"`top_k` must be a non-negative integer. Received: top_k={top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1]. Received: top_p={top_p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")

    def draw(log_probs, index, rows):
        scaled = _nucleus(_top_k(log_probs / float(temperature), top_k), top_p)
        uniform = counter_uniform(seed, index, rows, ops.shape(log_probs)[1])
        gumbel = -ops.log(-ops.log(uniform))  # argmax(logits + Gumbel noise) samples softmax(logits)
        return ops.argmax(scaled + gumbel, axis=-1)

    return _decode_row_by_row(
        model, source_ids, draw, max_length, None, None, use_cache, prefix_ids, max_length_factor
    )


def _top_k(log_probs, k):
    """Log-probabilities below the k-th largest of each row made impossible (k = 0: none)."""
    if not k or k >= log_probs.shape[-1]:
        return log_probs
    kth = ops.top_k(log_probs, k=k)[0][:, -1:]  # (N, 1)
    return ops.where(log_probs >= kth, log_probs, _IMPOSSIBLE)


def _nucleus(log_probs, top_p):
    """Only the most likely tokens whose probability, summed, first reaches `top_p`."""
    if top_p >= 1.0:
        return log_probs
    ranked, _ = ops.top_k(log_probs, k=log_probs.shape[-1])  # (N, V), descending
    probs = ops.softmax(ranked, axis=-1)
    before = ops.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
    kept = ops.where(before < top_p, ranked, ops.expand_dims(ranked[:, 0], 1))
    threshold = ops.min(kept, axis=-1, keepdims=True)  # (N, 1): the least likely kept token
    return ops.where(log_probs >= threshold, log_probs, _IMPOSSIBLE)


_MASK31 = 0x7FFFFFFF


def _mix(x):
    """An integer hash kept to 31 bits, so that right shifts are the same on every backend."""
    x = ops.bitwise_and(x, _MASK31)
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.bitwise_and(x * 0x2C1B3C6D, _MASK31)
    x = ops.bitwise_xor(x, ops.right_shift(x, 12))
    x = ops.bitwise_and(x * 0x297A2D39, _MASK31)
    return ops.bitwise_xor(x, ops.right_shift(x, 15))


def counter_uniform(seed, step, rows, vocab_size):
    """[len(rows), vocab_size] float32 in (0, 1), a function of (seed, step, row, token) alone;
    `rows` [N] int32: the rows' places in the batch."""
    row = ops.expand_dims(ops.cast(rows, "int32"), 1)
    token = ops.expand_dims(ops.arange(vocab_size, dtype="int32"), 0)
    x = _mix(
        ops.convert_to_tensor(seed, "int32") * 0x3C6EF372
        + ops.convert_to_tensor(step, "int32") * 0x1B873593
    )
    x = _mix(x + row * 0x5BD1E995)
    x = _mix(x + token * 0x27D4EB2F)  # (rows, V)
    # 23 bits, so that (x + 0.5) / 2^23 is exact in float32 and never rounds to 0 or 1 (where
    # the Gumbel noise would be infinite).
    return (ops.cast(ops.right_shift(x, 8), "float32") + 0.5) / 8388608.0


def _decode_row_by_row(model, source_ids, choose, max_length, start_id, end_id, use_cache, prefix_ids,
                       max_length_factor=None):
    """One token per row and step, `choose(log_probs [N, V], step, rows [N]: their places in
    the batch)` -> [N] ids, until every row has produced the end token or max_length tokens.
    Returns (tokens [B, L], scores [B]: the summed log-probabilities of the chosen tokens).
    A finished row leaves the batch where it may shrink (see `_search`)."""
    max_length, start_id, end_id = _resolve(model, max_length, start_id, end_id)
    source_ids = ops.convert_to_tensor(source_ids, dtype="int32")
    batch_size = ops.shape(source_ids)[0]
    pad_id = model.model_config.pad_id
    limits, length = _output_lengths(model, source_ids, max_length, max_length_factor, prefix_ids)
    stepper = _Stepper(model, source_ids, 1, length, use_cache, prefix_ids)
    shrink = use_cache and _batch_may_shrink()

    def condition(index, tokens, scores, finished, cache, rows, per_row, results):
        return ops.logical_and(index < length, ops.logical_not(ops.all(finished)))

    def body(index, tokens, scores, finished, cache, rows, per_row, results):
        log_probs, cache = stepper.log_probs(tokens, index, cache, rows)
        next_token = ops.cast(choose(log_probs, index, per_row["row"]), "int32")  # (N,)
        chosen = ops.take_along_axis(log_probs, ops.expand_dims(next_token, 1), axis=1)[:, 0]
        next_token = ops.where(finished, pad_id, next_token)
        scores = scores + ops.where(finished, 0.0, chosen)
        finished = ops.logical_or(finished, ops.equal(next_token, end_id))
        if limits is not None:
            finished = ops.logical_or(finished, index + 1 >= per_row["limits"])
        tokens = _write_column(tokens, index + 1, next_token)
        if shrink:
            places = per_row["row"]
            results = _record(results, (places, places), (tokens, scores))
            kept = ops.nonzero(ops.logical_not(finished))[0]
            tokens, scores, finished, cache, rows, per_row = _select(
                (tokens, scores, finished, cache, rows, per_row), kept, ops.shape(finished)[0]
            )
        return index + 1, tokens, scores, finished, cache, rows, per_row, results

    state = (_start_tokens(batch_size, length, start_id), ops.zeros((batch_size,), dtype="float32"))
    per_row = {"row": ops.arange(batch_size, dtype="int32")}
    if limits is not None:
        per_row["limits"] = limits
    final = _while_loop(
        condition,
        body,
        (
            ops.convert_to_tensor(0, dtype="int32"),
            *state,
            ops.zeros((batch_size,), dtype="bool"),
            stepper.self_cache,
            stepper.rows,
            per_row,
            state if shrink else (),  # where each row is when it leaves the batch
        ),
        length,
        shrink,
    )
    tokens, scores = final[-1] if shrink else final[1:3]
    return tokens[:, 1:], scores


def beam_search(
    model,
    source_ids,
    beam_size=4,
    length_penalty=0.6,
    max_length=None,
    start_id=None,
    end_id=None,
    use_cache=True,
    prefix_ids=None,
    max_length_factor=None,
):
    """Beam search with the GNMT length penalty; returns the best beam of each source row.

    A beam that has produced `end_id` is kept with its score frozen (its only continuation is
    padding at no cost) and competes with the open beams by its length-normalized score.
    Candidates are ranked by log-probability / ((5 + length) / 6) ** length_penalty. A source's
    search ends as soon as its best-ranked beam has ended (as in CTranslate2 and OpenNMT): its
    open beams are dropped rather than extended to `max_length`, though with a length penalty
    one of them could, rarely, have ranked above it later.
    `prefix_ids` [B, P] (0-padded) forces each row's first tokens. `max_length_factor`: a
    row's beams also end at that many times its source tokens (Marian's max-length-factor).
    """
    tokens, log_probs, lengths = _search(
        model, source_ids, beam_size, length_penalty, max_length, start_id, end_id, use_cache,
        prefix_ids, settled_by=1, max_length_factor=max_length_factor,
    )
    return _best_beams(tokens, log_probs, lengths, length_penalty, ops.shape(log_probs)[0], beam_size)


def beam_search_nbest(
    model,
    source_ids,
    num_hypotheses,
    beam_size=None,
    length_penalty=0.6,
    max_length=None,
    prefix_ids=None,
    use_cache=True,
    max_length_factor=None,
):
    """The `num_hypotheses` best beams of each source row, best first: (tokens [B, n, L] int32,
    length-normalized scores [B, n] float32). `beam_size` defaults to `num_hypotheses`. A
    source's search ends once its `num_hypotheses` best-ranked beams have ended."""
    beam_size = num_hypotheses if beam_size is None else beam_size
    if not isinstance(num_hypotheses, int) or not 0 < num_hypotheses <= beam_size:
        raise ValueError(
            f"`num_hypotheses` must be a positive integer <= beam_size={beam_size}. "
            f"Received: num_hypotheses={num_hypotheses!r}"
        )
    tokens, log_probs, lengths = _search(
        model, source_ids, beam_size, length_penalty, max_length, None, None, use_cache, prefix_ids,
        settled_by=num_hypotheses, max_length_factor=max_length_factor,
    )
    batch_size = ops.shape(log_probs)[0]
    scores = log_probs / gnmt_length_penalty(lengths, length_penalty)  # (B, K)
    best_scores, order = ops.top_k(scores, k=num_hypotheses)  # (B, n), best first
    tokens = ops.reshape(tokens, (batch_size, beam_size, ops.shape(tokens)[1]))  # (B, K, L + 1)
    best_tokens = ops.take_along_axis(tokens, ops.expand_dims(order, -1), axis=1)  # (B, n, L + 1)
    return best_tokens[:, :, 1:], best_scores


def _search(model, source_ids, beam_size, length_penalty, max_length, start_id, end_id,
            use_cache, prefix_ids, settled_by, max_length_factor=None):
    """The beam search loop: (tokens [B * K, L + 1] with the start token first, summed
    log-probabilities [B, K], lengths [B, K]) of every beam when it stops. A source is settled,
    and its open beams closed, once its `settled_by` best-ranked beams have ended; the loop
    stops when every source is settled (or at `max_length`).

    Where the batch may shrink (the cached search on TensorFlow), a settled source leaves it:
    its beams are copied out and later steps compute only the open sources (a batch runs until
    its slowest source settles). JAX's loops keep shapes static: settled sources ride along."""
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"`beam_size` must be a positive integer. Received: beam_size={beam_size!r}")
    vocab_size = model.model_config.vocab_size
    max_length, start_id, end_id = _resolve(model, max_length, start_id, end_id)
    source_ids = ops.convert_to_tensor(source_ids, dtype="int32")
    batch_size = ops.shape(source_ids)[0]
    pad_id = model.model_config.pad_id
    limits, length = _output_lengths(  # (B,) or None; the buffers' positions
        model, source_ids, max_length, max_length_factor, prefix_ids
    )
    stepper = _Stepper(model, source_ids, beam_size, length, use_cache, prefix_ids)
    shrink = use_cache and _batch_may_shrink()
    beam_range = ops.arange(beam_size)

    def beam_rows(sources):  # (S,) sources -> (S * K,) rows of their beams
        return ops.reshape(ops.expand_dims(sources * beam_size, 1) + beam_range, (-1,))

    def condition(index, tokens, log_probs, lengths, finished, cache, rows, per_source, results):
        return ops.logical_and(index < length, ops.logical_not(ops.all(finished)))

    def body(index, tokens, log_probs, lengths, finished, cache, rows, per_source, results):
        count = ops.shape(log_probs)[0]  # the sources in the batch
        step_log_probs, cache = stepper.log_probs(tokens, index, cache, rows)  # (count*K, V)
        parent, next_token, log_probs, lengths, finished = _extend_beams(
            ops.reshape(step_log_probs, (count, beam_size, vocab_size)), log_probs, lengths,
            finished, index, length_penalty, end_id, pad_id, per_source.get("limits"),
        )
        # top_k ranks the beams best first: a source whose best ones have all ended is settled.
        settled = ops.all(finished[:, :settled_by], axis=1)  # (count,)
        finished = ops.logical_or(finished, ops.expand_dims(settled, 1))
        parent_rows = ops.reshape(ops.expand_dims(ops.arange(count) * beam_size, 1) + parent, (-1,))
        tokens = ops.take(tokens, parent_rows, axis=0)
        tokens = _write_column(tokens, index + 1, ops.reshape(next_token, (-1,)))
        if shrink:
            sources = per_source["source"]
            results = _record(
                results, (beam_rows(sources), sources, sources), (tokens, log_probs, lengths)
            )
            kept = ops.nonzero(ops.logical_not(settled))[0]  # (count',) the open sources
            kept_rows = beam_rows(kept)
            parent_rows = ops.take(parent_rows, kept_rows, axis=0)  # one gather: reorder and drop
            log_probs, lengths, finished, per_source = _select(
                (log_probs, lengths, finished, per_source), kept, count
            )
            tokens, rows = _select((tokens, rows), kept_rows, count * beam_size)
        if use_cache:
            cache = keras.tree.map_structure(lambda c: ops.take(c, parent_rows, axis=0), cache)
        return index + 1, tokens, log_probs, lengths, finished, cache, rows, per_source, results

    state = _first_beams(batch_size, beam_size, length, start_id)  # tokens, log_probs, lengths
    per_source = {} if limits is None else {"limits": limits}
    if shrink:
        per_source["source"] = ops.arange(batch_size)
    loop_vars = (
        ops.convert_to_tensor(0, dtype="int32"),
        *state,
        ops.zeros((batch_size, beam_size), dtype="bool"),
        stepper.self_cache,
        stepper.rows,
        per_source,
        state if shrink else (),  # where each source's beams are when it leaves the batch
    )
    final = _while_loop(condition, body, loop_vars, length, shrink)
    return final[-1] if shrink else final[1:4]


def _first_beams(batch_size, beam_size, length, start_id):
    """(tokens [B * K, L + 1], log_probs [B, K], lengths [B, K]) before the first step. Only the
    first beam is open, so that the K beams do not begin as K copies."""
    initial_log_probs = ops.where(
        ops.equal(ops.arange(beam_size), 0), 0.0, _IMPOSSIBLE
    ) * ops.ones((batch_size, 1), dtype="float32")
    return (
        _start_tokens(batch_size * beam_size, length, start_id),
        initial_log_probs,
        ops.zeros((batch_size, beam_size), dtype="int32"),
    )


def _extend_beams(step_log_probs, log_probs, lengths, finished, index, length_penalty, end_id,
                  pad_id, limits=None):
    """One step of every source's K beams: the K best continuations of them all, ranked by
    log-probability over the GNMT penalty of their length. step_log_probs [S, K, V]; log_probs,
    lengths, finished [S, K]; `limits` [S]: where each source's beams end at the latest (as at
    max_length). Returns (parent beam, token, log_probs, lengths, finished), each [S, K], best
    first."""
    count, beam_size, vocab_size = ops.shape(log_probs)[0], log_probs.shape[1], step_log_probs.shape[2]
    # A finished beam's only continuation: padding, at no cost.
    finished_row = ops.where(ops.equal(ops.arange(vocab_size), pad_id), 0.0, _IMPOSSIBLE)  # (V,)
    step_log_probs = ops.where(ops.expand_dims(finished, -1), finished_row, step_log_probs)
    candidates = ops.expand_dims(log_probs, -1) + step_log_probs  # (S, K, V)
    candidate_lengths = ops.where(finished, lengths, index + 1)  # (S, K)
    normalized = candidates / ops.expand_dims(
        gnmt_length_penalty(candidate_lengths, length_penalty), -1
    )
    flat = ops.reshape(normalized, (count, beam_size * vocab_size))
    _, chosen = ops.top_k(flat, k=beam_size)  # (S, K), best first
    parent = chosen // vocab_size
    next_token = ops.cast(chosen % vocab_size, "int32")
    log_probs = ops.take_along_axis(
        ops.reshape(candidates, (count, beam_size * vocab_size)), chosen, axis=1
    )
    lengths = ops.take_along_axis(candidate_lengths, parent, axis=1)
    was_finished = ops.take_along_axis(finished, parent, axis=1)
    finished = ops.logical_or(was_finished, ops.equal(next_token, end_id))
    if limits is not None:
        finished = ops.logical_or(finished, ops.expand_dims(index + 1 >= limits, 1))
    return parent, next_token, log_probs, lengths, finished


def _batch_may_shrink():
    """Whether a decoding loop may drop rows between steps: TensorFlow's while loop carries
    tensors whose batch size changes (given shape invariants); JAX's keeps shapes static."""
    return keras.backend.backend() == "tensorflow"


def _while_loop(condition, body, loop_vars, maximum_iterations, shrink):
    if not shrink:
        return ops.while_loop(condition, body, loop_vars, maximum_iterations=maximum_iterations)
    import tensorflow as tf  # only reached on the TensorFlow backend

    def batch_free(value):  # every array's first axis may change between steps
        if not value.shape.rank:
            return value.shape
        return tf.TensorShape([None] + value.shape[1:])

    invariants = tf.nest.map_structure(batch_free, loop_vars)
    return tf.while_loop(
        condition, body, loop_vars, shape_invariants=invariants,
        maximum_iterations=maximum_iterations,
    )


def _record(results, places, values):
    """`results` with each of `values` written at its `places` (int32 [N]) of the first axis."""
    return tuple(
        ops.scatter_update(result, ops.expand_dims(at, 1), value)
        for result, at, value in zip(results, places, values)
    )


def _select(structure, indices, count):
    """`structure`'s arrays at `indices` of their first axis (`count` long), gathered only when
    `indices` are fewer: only a step at which rows leave the batch pays for the copy."""
    return ops.cond(
        ops.shape(indices)[0] < count,
        lambda: keras.tree.map_structure(lambda array: ops.take(array, indices, axis=0), structure),
        lambda: structure,
    )


def _best_beams(tokens, log_probs, lengths, length_penalty, batch_size, beam_size):
    """tokens [B * K, L + 1], log_probs and lengths [B, K] -> the best beam of each source row:
    (tokens after the start token [B, L], length-normalized scores [B])."""
    scores = log_probs / gnmt_length_penalty(lengths, length_penalty)  # (B, K)
    best = ops.argmax(scores, axis=1)  # (B,)
    tokens = ops.reshape(tokens, (batch_size, beam_size, ops.shape(tokens)[1]))  # (B, K, L + 1)
    best_tokens = ops.take_along_axis(tokens, ops.reshape(best, (batch_size, 1, 1)), axis=1)
    best_scores = ops.take_along_axis(scores, ops.expand_dims(best, 1), axis=1)
    return best_tokens[:, 0, 1:], best_scores[:, 0]


def score_targets(model, source_ids, target_ids, start_id=None):
    """Log-probabilities of given translations: `target_ids` [B, T] are the tokens after the
    start token (end token included where it should be scored; 0-padded). Returns (per-token
    natural-log probabilities [B, T] float32, 0 on padding; their sums [B]), what greedy
    decoding's scores add up for its own tokens."""
    source_ids = ops.convert_to_tensor(source_ids, dtype="int32")
    target_ids = ops.convert_to_tensor(target_ids, dtype="int32")
    config = model.model_config
    start_id = config.start_id if start_id is None else start_id
    starts = ops.full((ops.shape(target_ids)[0], 1), start_id, dtype="int32")
    decoder_input = ops.concatenate([starts, target_ids[:, :-1]], axis=1)  # (B, T): shifted right
    logits = model({"source_ids": source_ids, "target_ids": decoder_input}, training=False)
    log_probs = ops.log_softmax(logits, axis=-1)  # (B, T, V)
    chosen = ops.take_along_axis(log_probs, ops.expand_dims(target_ids, -1), axis=-1)[..., 0]
    per_token = ops.where(ops.not_equal(target_ids, config.pad_id), chosen, 0.0)
    return per_token, ops.sum(per_token, axis=1)


def translate_ids(model, source_ids, beam_size=4, length_penalty=0.6, max_length=None,
                  max_length_factor=None):
    """Greedy decoding for beam size 1 (the same result, less work), beam search above it."""
    if beam_size == 1:
        return greedy_decode(
            model, source_ids, max_length=max_length, max_length_factor=max_length_factor
        )
    return beam_search(
        model, source_ids, beam_size=beam_size, length_penalty=length_penalty,
        max_length=max_length, max_length_factor=max_length_factor,
    )
