"""Perplexity of a `TransformerLM` on a long token stream, three ways (the article's list):

- `per_segment`: cut into segments of the model's `max_length`, each scored on its own (fast;
  the first tokens of every segment have little or no context);
- `sliding_window`: every token predicted from the `max_length` tokens before it, one forward
  pass per token (the vanilla model's best case, and slow);
- `with_memory`: segment after segment, each attending to the previous ones through the
  Transformer-XL memory (one pass per segment).

Each scores the same predictions (token 1 .. N-1 of the stream from what precedes it) and
returns {"perplexity", "tokens", "seconds"}.
"""

import math
import time

import numpy as np
import tensorflow as tf

from tfx_transformer.tasks.lm.data import segments_at


def _log_probs_of(logits, labels):
    """Natural-log probability of each label under float32 logits [..., V]."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.gather(log_probs, labels, batch_dims=len(labels.shape))


def _result(total_log_prob, count, started):
    return {
        "perplexity": math.exp(-total_log_prob / max(count, 1)),
        "tokens": int(count),
        "seconds": time.time() - started,
    }


def per_segment(model, stream, batch_size=32):
    """Segments of `max_length` tokens scored independently."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    length = model.model_config.max_length
    inputs, labels = segments(stream, length)
    score = tf.function(lambda ids: model(ids, training=False))
    total, count = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        ids, targets = inputs[start : start + batch_size], labels[start : start + batch_size]
        log_probs = _log_probs_of(score(tf.constant(ids)), tf.constant(targets)).numpy()
        real = targets != 0
        total += float(log_probs[real].sum())
        count += int(real.sum())
    return _result(total, count, started)


def sliding_window(model, stream, batch_size=128):
    """Token t + 1 from tokens max(0, t - L + 1) .. t: one window per prediction."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    length = model.model_config.max_length
    score = tf.function(lambda ids: model(ids, training=False))
    predictions = len(stream) - 1
    # The first L - 1 predictions share the first window (the model is causal, so what follows
    # position t cannot change its prediction); each later one has its own window ending at t.
    head = min(length, predictions)
    total = float(
        _log_probs_of(score(tf.constant(stream[None, :head])), tf.constant(stream[None, 1 : head + 1]))
        .numpy()
        .sum()
    )
    ends = np.arange(head, predictions)  # predict stream[end + 1] from a window ending at `end`
    for start in range(0, len(ends), batch_size):
        chunk = ends[start : start + batch_size]
        windows = np.stack([stream[end - length + 1 : end + 1] for end in chunk])
        logits = score(tf.constant(windows))[:, -1]  # (b, V)
        total += float(_log_probs_of(logits, tf.constant(stream[chunk + 1])).numpy().sum())
    return _result(total, predictions, started)


def with_memory(model, stream):
    """Segment after segment in one sequence, the memory carried from each to the next."""
    started = time.time()
    stream = np.asarray(stream, "int32")
    inputs, labels = segments(stream, model.model_config.max_length)
    step = tf.function(lambda ids, memory: model.step(ids, memory, training=False))
    memory = model.empty_memory(1)
    total, count = 0.0, 0
    for ids, targets in zip(inputs, labels):
        logits, memory = step(tf.constant(ids[None]), memory)
        log_probs = _log_probs_of(logits, tf.constant(targets[None])).numpy()[0]
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
