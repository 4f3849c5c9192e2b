"""`TransformerLM`: vanilla segments, Transformer-XL memory, and the three evaluations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import tfx_transformer as tt
from tfx_transformer.tasks.lm import metrics as lm_metrics
from tfx_transformer.models import TransformerLM

VOCAB = 24


def lm(segment=8, **overrides):
    settings = {"position": "transformer_xl", "num_decoder_layers": 2, **overrides}
    config = tt.TransformerConfig.preset(
        "tiny", vocab_size=VOCAB, max_length=segment, dropout=0.0, **settings
    )
    return TransformerLM(config)


def numpy(x):
    return ops.convert_to_numpy(x)


def test_memory_length_zero_is_vanilla_segments(rng):
    model = lm(memory_length=0)
    ids = rng.integers(4, VOCAB, size=(2, 24))
    memory = model.empty_memory(2)
    for start in range(0, 24, 8):
        logits, memory = model.step(ids[:, start : start + 8], memory)
        np.testing.assert_allclose(numpy(logits), numpy(model(ids[:, start : start + 8])), atol=1e-5)
    assert memory is None


@pytest.mark.parametrize("position", ["transformer_xl", "shaw", "tener"])
def test_a_memory_as_long_as_the_history_equals_one_pass_over_everything(position, rng):
    model = lm(memory_length=16, position=position)
    ids = rng.integers(4, VOCAB, size=(2, 16))
    full = numpy(model(ids))  # no memory: one causal pass over both segments
    memory = model.empty_memory(2)
    first, memory = model.step(ids[:, :8], memory)
    second, memory = model.step(ids[:, 8:], memory)
    np.testing.assert_allclose(numpy(first), full[:, :8], atol=1e-5)
    np.testing.assert_allclose(numpy(second), full[:, 8:], atol=1e-5)
    assert bool(np.all(numpy(memory[1])))  # every remembered position now holds a token


def second_segment(model, ids):
    _, memory = model.step(ids[:, :8], model.empty_memory(1))
    return numpy(model.step(ids[:, 8:], memory)[0])


def test_a_short_memory_reaches_further_with_every_layer(rng):
    ids = rng.integers(4, VOCAB, size=(1, 16))
    early = ids.copy()
    early[:, :4] = (early[:, :4] - 3) % (VOCAB - 4) + 4  # before the 4 remembered positions
    # One layer remembers only the embeddings of positions 4..7: tokens 0..3 are out of reach.
    one = lm(memory_length=4, num_decoder_layers=1)
    np.testing.assert_allclose(second_segment(one, early), second_segment(one, ids), atol=1e-5)
    late = ids.copy()
    late[:, 6] = (late[:, 6] - 3) % (VOCAB - 4) + 4
    assert not np.allclose(second_segment(one, late), second_segment(one, ids), atol=1e-4)
    # With two, positions 4..7 carry what they saw of 0..3 in the first segment (XL's context
    # grows with depth, up to layers x memory).
    two = lm(memory_length=4, num_decoder_layers=2)
    assert not np.allclose(second_segment(two, early), second_segment(two, ids), atol=1e-4)


def test_no_gradient_flows_into_the_memory(rng):
    model = lm(memory_length=8)
    ids = tf.constant(rng.integers(4, VOCAB, size=(2, 8)))
    with tf.GradientTape() as tape:
        _, (states, _) = model.step(ids, model.empty_memory(2), training=True)
        total = tf.add_n([tf.reduce_sum(s) for s in states])
    assert all(g is None for g in tape.gradient(total, model.trainable_variables))


def copy_task(rng, count, segment):
    """context = a; segment = a; the token after each position is a's next one: every answer
    but the last sits in the previous segment."""
    a = rng.integers(4, VOCAB, size=(count, segment + 1))
    return {"context_ids": a[:, :segment], "token_ids": a[:, :segment]}, np.concatenate(
        [a[:, 1:segment], a[:, :1]], axis=1
    )


@pytest.mark.slow
def test_memory_carries_information_across_the_segment_boundary():
    rng = np.random.default_rng(0)
    inputs, labels = copy_task(rng, 3000, 8)
    test_inputs, test_labels = copy_task(rng, 300, 8)
    accuracy = {}
    for memory_length in (8, 0):
        keras.utils.set_random_seed(0)
        model = lm(memory_length=memory_length, d_model=32, num_heads=2, d_ff=64)
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(inputs, labels, batch_size=50, epochs=8, verbose=0)
        predicted = np.argmax(numpy(model(test_inputs)), axis=-1)
        # Positions 0..6 need the previous segment; position 7's answer is this segment's first.
        accuracy[memory_length] = (predicted[:, :7] == test_labels[:, :7]).mean()
    assert accuracy[8] > 0.9, accuracy
    assert accuracy[0] < 0.2, accuracy


def test_config_keras_file_round_trip_and_errors(tmp_path, rng):
    model = lm(memory_length=8, norm_first=True)
    inputs = {"token_ids": rng.integers(4, VOCAB, size=(2, 8)), "context_ids": rng.integers(4, VOCAB, size=(2, 8))}
    model.save(tmp_path / "lm.keras")
    again = keras.models.load_model(tmp_path / "lm.keras")
    assert isinstance(again, TransformerLM) and again.model_config == model.model_config
    np.testing.assert_allclose(numpy(again(inputs)), numpy(model(inputs)), atol=1e-6)
    with pytest.raises(ValueError, match="relative positions"):
        lm(memory_length=8, position="sinusoidal")
    with pytest.raises(ValueError, match="not causal"):
        lm(position="sinusoidal", linformer_length=4)


def reference_log_prob(model, context, token):
    logits = numpy(model(np.array([context])))[0, -1].astype("float64")
    return logits[token] - logits.max() - math.log(np.exp(logits - logits.max()).sum())


def test_the_three_evaluations_against_a_plain_loop(rng):
    model = lm(memory_length=8, num_decoder_layers=1)  # one layer: the memory is a plain window
    stream = rng.integers(4, VOCAB, size=21)
    length = model.model_config.max_length
    window = [reference_log_prob(model, stream[max(0, t - length + 1) : t + 1], stream[t + 1]) for t in range(20)]
    segment = [reference_log_prob(model, stream[t - t % length : t + 1], stream[t + 1]) for t in range(20)]
    sliding = lm_metrics.sliding_window(model, stream, batch_size=3)
    assert sliding["tokens"] == 20
    assert sliding["perplexity"] == pytest.approx(math.exp(-np.mean(window)), rel=1e-4)
    separate = lm_metrics.per_segment(model, stream, batch_size=2)
    assert separate["perplexity"] == pytest.approx(math.exp(-np.mean(segment)), rel=1e-4)
    # With memory: each token sees its segment and the 8 positions before it.
    memory = [reference_log_prob(model, stream[max(0, t - t % length - 8) : t + 1], stream[t + 1]) for t in range(20)]
    remembered = lm_metrics.with_memory(model, stream)
    assert remembered["tokens"] == 20
    assert remembered["perplexity"] == pytest.approx(math.exp(-np.mean(memory)), rel=1e-4)
