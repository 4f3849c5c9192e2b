"""Perplexity of a `TransformerLM` on a long token stream, three ways (the article's list):

- `per_segment`: cut into segments of the model's `max_length`, each scored on its own (fast;
  the first tokens of every segment have little or no context);
- `sliding_window`: every token predicted from the `max_length` tokens before it, one forward
  pass per token (the vanilla model's best case, and slow);
- `with_memory`: segment after segment, each attending to the previous ones through the
  Transformer-XL memory (one pass per segment).

Each scores the same predictions (token 1 .. N-1 of the stream from what precedes it) and
returns {"perplexity", "tokens", "seconds"}. `compiled`: a dict the caller keeps for one model,
in which the compiled functions are kept from one call to the next (evaluations in training).
"""

import math
import time

import numpy as np
from keras import ops

from tfx_transformer.compiling import WeightsAsArguments, compile_for_backend, reused
from tfx_transformer.tasks.lm.data import segments_at


def _log_probs_of(logits, labels):
    """Natural-log probability of each label [...] under logits [..., V], in float32."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(labels, -1), axis=-1), -1)


def _scorer(model, last_only=False, compiled=None):
    """(ids [B, L], labels [B, L]) -> log-probabilities [B, L], compiled; with `last_only`,
    labels [B, 1] of the last position and log-probabilities [B]."""
    return reused(compiled, ("score", last_only), lambda: _compile_scorer(model, last_only))


def _compile_scorer(model, last_only):

    def score(ids, labels):
        logits = model(ids, training=False)
        if last_only:
            return _log_probs_of(logits[:, -1], labels[:, 0])
        return _log_probs_of(logits, labels)

    return compile_for_backend(score, inputs=2, model=model)


def _result(total_log_prob, count, started):
    return {
        "perplexity": math.exp(-total_log_prob / max(count, 1)),
        "tokens": int(count),
        "seconds": time.time() - started,
    }


def per_segment(model, stream, batch_size=32, compiled=None):
    """Segments of `max_length` tokens scored independently."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    length = model.model_config.max_length
    inputs, labels = segments(stream, length)
    score = _scorer(model, compiled=compiled)
    total, count = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        ids, targets = inputs[start : start + batch_size], labels[start : start + batch_size]
        log_probs = ops.convert_to_numpy(score(ids, targets))
        real = targets != 0
        total += float(log_probs[real].sum())
        count += int(real.sum())
    return _result(total, count, started)


def lower_per_segment(model, stream, value_of, compiled, batch_size=32):
    """On JAX, `per_segment(model, stream, batch_size, compiled)`'s compilations not made
    before, lowered for the weights `value_of(variable)` (see `WeightsAsArguments.lower`)."""
    score = _scorer(model, compiled=compiled)
    if not isinstance(score, WeightsAsArguments):
        return []
    count = len(segments(np.asarray(stream, "int32"), model.model_config.max_length)[0])
    rows = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    return score.lower_new(value_of, [(row, model.model_config.max_length) for row in rows], inputs=2)


def sliding_window(model, stream, batch_size=128, compiled=None):
    """Token t + 1 from tokens max(0, t - L + 1) .. t: one window per prediction."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    length = model.model_config.max_length
    predictions = len(stream) - 1
    # The first L - 1 predictions share the first window (the model is causal, so what follows
    # position t cannot change its prediction); each later one has its own window ending at t.
    head = min(length, predictions)
    score = _scorer(model, compiled=compiled)
    total = float(ops.convert_to_numpy(score(stream[None, :head], stream[None, 1 : head + 1])).sum())
    score_last = _scorer(model, last_only=True, compiled=compiled)
    ends = np.arange(head, predictions)  # predict stream[end + 1] from a window ending at `end`
    for start in range(0, len(ends), batch_size):
        chunk = ends[start : start + batch_size]
        windows = np.stack([stream[end - length + 1 : end + 1] for end in chunk])
        total += float(ops.convert_to_numpy(score_last(windows, stream[chunk + 1][:, None])).sum())
    return _result(total, predictions, started)


def with_memory(model, stream, compiled=None):
    """Segment after segment in one sequence, the memory carried from each to the next."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    inputs, labels = segments(stream, model.model_config.max_length)

    def step(ids, labels, memory):
        logits, memory = model.step(ids, memory, training=False)
        return _log_probs_of(logits, labels), memory

    # inputs=None: the memory is a nested tuple
    step = reused(compiled, "with_memory", lambda: compile_for_backend(step, inputs=None, model=model))
    memory = model.empty_memory(1)
    total, count = 0.0, 0
    for ids, targets in zip(inputs, labels):
        log_probs, memory = step(ids[None], targets[None], memory)
        log_probs = ops.convert_to_numpy(log_probs)[0]
        real = targets != 0
        total += float(log_probs[real].sum())
        count += int(real.sum())
    return _result(total, count, started)


def segments(stream, length):
    """(inputs, labels) [N, length]: consecutive segments and the tokens that follow each
    position; the last segment is padded with 0, which is not scored."""
    stream = np.asarray(stream, "int32")
    return segments_at(stream, np.arange(0, len(stream) - 1, length), length)


PROCEDURES = {"per_segment": per_segment, "sliding_window": sliding_window, "with_memory": with_memory}
