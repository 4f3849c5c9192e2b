"""A tiny model learns to reverse sequences: gradients flow through every mask and the cache."""

import keras
import numpy as np
import pytest
from keras import ops

from tfx_transformer import Transformer, TransformerConfig, greedy_decode

START, END, FIRST_SYMBOL, VOCAB = 2, 3, 4, 16


def reverse_task(rng, count, min_len=3, max_len=8):
    width = max_len + 1
    source = np.zeros((count, max_len), "int32")
    decoder_in = np.zeros((count, width), "int32")
    labels = np.zeros((count, width), "int32")
    for i in range(count):
        n = rng.integers(min_len, max_len + 1)
        symbols = rng.integers(FIRST_SYMBOL, VOCAB, size=n)
        source[i, :n] = symbols
        decoder_in[i, : n + 1] = [START, *symbols[::-1]]
        labels[i, : n + 1] = [*symbols[::-1], END]
    return source, decoder_in, labels


@pytest.mark.slow
def test_tiny_model_learns_to_reverse(rng):
    config = TransformerConfig.preset(
        "tiny", vocab_size=VOCAB, d_model=64, d_ff=128, dropout=0.0, max_length=16
    )
    model = Transformer(config)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    source, decoder_in, labels = reverse_task(rng, 6000)
    model.fit(
        {"source_ids": source, "target_ids": decoder_in}, labels, batch_size=64, epochs=5, verbose=0
    )

    test_source, test_in, test_labels = reverse_task(np.random.default_rng(99), 300)
    predicted = np.argmax(
        ops.convert_to_numpy(model({"source_ids": test_source, "target_ids": test_in})), -1
    )
    real = test_labels != 0
    token_accuracy = (predicted[real] == test_labels[real]).mean()
    assert token_accuracy >= 0.95, token_accuracy

    decoded = ops.convert_to_numpy(greedy_decode(model, test_source, max_length=9)[0])
    exact = np.mean([np.array_equal(d, l) for d, l in zip(decoded, test_labels)])
    assert exact >= 0.9, exact
