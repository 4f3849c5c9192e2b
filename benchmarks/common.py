"""What the benchmarks share: the keras-hub peer model, timing in alternation, machine info."""

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


def machine():
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, Keras {keras.__version__}"


def keras_hub_seq2seq(vocab_size, max_length, d_model, num_heads, d_ff, num_encoder_layers,
                      num_decoder_layers, dropout):
    """The usual keras-hub recipe: TokenAndPositionEmbedding, TransformerEncoder/Decoder, Dense."""
    import keras_hub

    source = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    target = keras.Input(shape=(None,), dtype="int32", name="target_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocab_size, max_length, d_model, mask_zero=True)(source)
    for _ in range(num_encoder_layers):
        x = keras_hub.layers.TransformerEncoder(d_ff, num_heads, dropout=dropout)(x)
    y = keras_hub.layers.TokenAndPositionEmbedding(vocab_size, max_length, d_model, mask_zero=True)(target)
    for _ in range(num_decoder_layers):
        y = keras_hub.layers.TransformerDecoder(d_ff, num_heads, dropout=dropout)(y, x)
    logits = keras.layers.Dense(vocab_size, dtype=keras.mixed_precision.dtype_policy())(y)
    logits = keras.layers.Activation("linear", dtype="float32")(logits)
    return keras.Model({"source_ids": source, "target_ids": target}, logits)


def alternate(functions, rounds, per_round=1, deadline=None):
    """{name: [seconds per call, one figure per round]}; the functions take turns each round.
    With `deadline` (a time.perf_counter() value), no round starts after it (the first always
    does)."""
    times = {name: [] for name in functions}
    for round_index in range(rounds):
        if round_index and deadline is not None and time.perf_counter() > deadline:
            break
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(per_round):
                function()
            times[name].append((time.perf_counter() - start) / per_round)
    return times


def median(values):
    return statistics.median(values)
