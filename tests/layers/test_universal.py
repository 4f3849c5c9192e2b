"""The Universal Transformer's stacks: shared weights, the timestep signal, and ACT's halting
bookkeeping checked against a per-position reference written the way Graves states it."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests.layer_testing import run_layer_test
from tfx_transformer import Transformer, TransformerConfig
from tfx_transformer.layers import (
    EncoderBlock,
    UniversalDecoder,
    UniversalEncoder,
    causal_mask,
    sinusoid,
)

BLOCK = dict(d_model=16, num_heads=4, d_ff=32, dropout=0.0)


def numpy_act(layer, x, mask, real, threshold):
    """ACT position by position: N = the first step whose cumulative halting probability passes
    the threshold (or the last step), R = 1 - the sum of the p before it, the output the sum of
    p_t s_t plus R s_N; a halted position's state is its output from then on."""
    batch, length, _ = x.shape
    state = x.astype("float64")
    output = np.zeros_like(state)
    halted = ~real.copy()
    cumulative = np.zeros((batch, length))
    steps = np.zeros((batch, length))
    remainders = np.zeros((batch, length))
    for step in range(layer.max_steps):
        state = state + np.asarray(sinusoid(step, x.shape[-1]))
        p = np.asarray(layer.halting_unit(state.astype("float32")))[..., 0].astype("float64")
        transformed = np.asarray(
            layer.block(state.astype("float32"), attention_mask=mask)
        ).astype("float64")
        for b in range(batch):
            for t in range(length):
                if halted[b, t]:
                    continue
                steps[b, t] += 1
                last = step == layer.max_steps - 1
                if last or cumulative[b, t] + p[b, t] > threshold:
                    remainders[b, t] = 1 - cumulative[b, t]
                    output[b, t] += remainders[b, t] * transformed[b, t]
                    halted[b, t] = True
                else:
                    cumulative[b, t] += p[b, t]
                    output[b, t] += p[b, t] * transformed[b, t]
        state = np.where(halted[..., None], output, transformed)
    return output, steps, remainders


def padded_input(rng, batch=3, length=6):
    x = rng.normal(size=(batch, length, 16)).astype("float32")
    real = np.ones((batch, length), bool)
    real[1, 4:] = False
    real[2, 2:] = False
    return x, real


@pytest.mark.parametrize("threshold", [0.99, 0.5])
def test_act_matches_the_per_position_reference(threshold, rng):
    x, real = padded_input(rng)
    mask = real[:, None, :]
    layer = UniversalEncoder(5, adaptive_computation=True, halting_threshold=threshold, **BLOCK)
    layer(x, attention_mask=mask, padding_mask=real)
    # Halting probabilities that vary by position, so that positions halt at different steps.
    layer.halting_unit.kernel.assign(0.5 * rng.normal(size=(16, 1)).astype("float32"))
    layer.halting_unit.bias.assign(np.array([-1.5], "float32"))
    output, ponder = layer(x, attention_mask=mask, padding_mask=real, return_ponder=True)
    expected, steps, remainders = numpy_act(layer, x, mask, real, threshold)
    np.testing.assert_allclose(np.asarray(output), expected, atol=2e-4)
    np.testing.assert_array_equal(np.asarray(ponder["steps"]), steps)
    np.testing.assert_allclose(np.asarray(ponder["remainders"]), remainders, atol=1e-6)
    assert len(np.unique(steps[real])) > 1


def test_halting_weights_sum_to_one_and_padding_never_ponders(rng):
    """A block whose every output is the vector c (post-LN with gamma 0, beta c) makes the ACT
    output (sum of weights) * c: it must be c on every real position and 0 on padding."""
    x, real = padded_input(rng)
    layer = UniversalEncoder(6, adaptive_computation=True, **BLOCK)
    layer(x, attention_mask=real[:, None, :], padding_mask=real)
    target = rng.normal(size=16).astype("float32")
    norm = layer.block.feed_forward_norm
    norm.gamma.assign(np.zeros(16, "float32"))
    norm.beta.assign(target)
    # Random halting weights: positions halt after different numbers of steps.
    layer.halting_unit.kernel.assign(rng.normal(size=(16, 1)).astype("float32"))
    layer.halting_unit.bias.assign(np.array([-1.0], "float32"))
    output, ponder = layer(x, attention_mask=real[:, None, :], padding_mask=real, return_ponder=True)
    output, steps = np.asarray(output), np.asarray(ponder["steps"])
    np.testing.assert_allclose(output[real], np.broadcast_to(target, output[real].shape), atol=1e-5)
    np.testing.assert_array_equal(output[~real], 0.0)
    np.testing.assert_array_equal(steps[~real], 0.0)
    np.testing.assert_array_equal(np.asarray(ponder["remainders"])[~real], 0.0)
    assert steps[real].min() >= 1 and steps[real].max() <= 6


def test_ponder_cost_is_tau_times_mean_steps_plus_remainders_over_real_positions(rng):
    x, real = padded_input(rng)
    layer = UniversalEncoder(4, adaptive_computation=True, ponder_cost=0.05, **BLOCK)
    _, ponder = layer(x, attention_mask=real[:, None, :], padding_mask=real, return_ponder=True)
    assert not layer.losses  # inference adds no loss
    layer(x, attention_mask=real[:, None, :], padding_mask=real, training=True)
    (loss,) = layer.losses
    total = np.asarray(ponder["steps"]) + np.asarray(ponder["remainders"])
    assert float(loss) == pytest.approx(0.05 * total[real].mean(), rel=1e-5)


def test_the_ponder_cost_trains_the_halting_unit_through_the_remainders(rng):
    x, real = padded_input(rng)
    layer = UniversalEncoder(4, adaptive_computation=True, **BLOCK)
    with tf.GradientTape() as tape:
        layer(x, attention_mask=real[:, None, :], padding_mask=real, training=True)
        loss = tf.add_n(layer.losses)
    kernel_gradient = tape.gradient(loss, layer.halting_unit.kernel)
    assert kernel_gradient is not None and np.abs(np.asarray(kernel_gradient)).sum() > 0


def test_padding_appended_changes_neither_outputs_nor_ponder_cost(rng):
    x, real = padded_input(rng)
    layer = UniversalEncoder(4, adaptive_computation=True, **BLOCK)
    out, ponder = layer(x, attention_mask=real[:, None, :], padding_mask=real, return_ponder=True)
    layer(x, attention_mask=real[:, None, :], padding_mask=real, training=True)
    cost = float(layer.losses[0])
    longer_x = np.concatenate([x, rng.normal(size=(3, 3, 16)).astype("float32")], axis=1)
    longer_real = np.pad(real, ((0, 0), (0, 3)))
    again, ponder_again = layer(
        longer_x, attention_mask=longer_real[:, None, :], padding_mask=longer_real, return_ponder=True
    )
    layer(longer_x, attention_mask=longer_real[:, None, :], padding_mask=longer_real, training=True)
    np.testing.assert_allclose(np.asarray(again)[:, :6][real], np.asarray(out)[real], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ponder_again["steps"])[:, :6], ponder["steps"])
    assert float(layer.losses[0]) == pytest.approx(cost, rel=1e-6)


def test_fixed_steps_apply_the_one_block_with_the_timestep_signal(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    layer = UniversalEncoder(3, **BLOCK)
    output = np.asarray(layer(x))
    state = x
    for step in range(3):
        state = np.asarray(layer.block(state + np.asarray(sinusoid(step, 16))))
    np.testing.assert_allclose(output, state, atol=1e-5)


def test_weights_are_shared_whatever_the_number_of_steps(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    counts = set()
    for steps in (1, 2, 8):
        layer = UniversalEncoder(steps, adaptive_computation=True, **BLOCK)
        layer(x)
        counts.add(layer.count_params())
    block = EncoderBlock(**BLOCK)
    block(x)
    assert counts == {block.count_params() + 16 + 1}  # the block and the halting unit
    small = Transformer(TransformerConfig.preset("tiny", vocab_size=30, universal_steps=2))
    deep = Transformer(TransformerConfig.preset("tiny", vocab_size=30, universal_steps=12))
    assert small.count_params() == deep.count_params()


@pytest.mark.parametrize("adaptive", [False, True])
def test_universal_encoder_layer_contract(adaptive, rng):
    x, real = padded_input(rng)
    run_layer_test(
        UniversalEncoder,
        {"max_steps": 3, "adaptive_computation": adaptive, **BLOCK, "norm_first": adaptive},
        (x,),
        {"attention_mask": real[:, None, :], "padding_mask": real},
    )


def test_universal_decoder_layer_contract(rng):
    x = rng.normal(size=(2, 4, 16)).astype("float32")
    memory = rng.normal(size=(2, 5, 16)).astype("float32")
    run_layer_test(
        UniversalDecoder,
        {"max_steps": 3, "adaptive_computation": True, **BLOCK},
        (x, memory),
        {"self_attention_mask": causal_mask(4)},
    )


def test_one_decoding_position_at_a_time_equals_the_full_pass(rng):
    """The decoder's per-token ACT against the full pass: caches of every step's states."""
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    memory = rng.normal(size=(2, 4, 16)).astype("float32")
    layer = UniversalDecoder(4, adaptive_computation=True, halting_threshold=0.9, **BLOCK)
    full, full_ponder = layer(x, memory, self_attention_mask=causal_mask(5), return_ponder=True)
    self_cache = layer.empty_self_attention_cache(2, 5)
    cross_cache = layer.project_cross_attention_cache(memory)
    assert len(self_cache) == 4 and len(cross_cache) == 1
    for index in range(5):
        out, ponder, self_cache = layer(
            x[:, index : index + 1],
            self_attention_mask=causal_mask(1, 5, query_offset=index),
            self_attention_cache=self_cache,
            cache_update_index=index,
            cross_attention_cache=cross_cache,
            return_ponder=True,
        )
        np.testing.assert_allclose(np.asarray(out)[:, 0], np.asarray(full)[:, index], atol=1e-5)
        np.testing.assert_array_equal(
            np.asarray(ponder["steps"])[:, 0], np.asarray(full_ponder["steps"])[:, index]
        )


def test_mixed_precision_keeps_the_halting_in_float32(rng):
    x, real = padded_input(rng)
    layer = UniversalEncoder(4, adaptive_computation=True, **BLOCK, dtype="mixed_bfloat16")
    output, ponder = layer(x, attention_mask=real[:, None, :], padding_mask=real, return_ponder=True)
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    assert layer.halting_unit.compute_dtype == "float32"
    assert ponder["steps"].dtype == "float32"
    assert np.all(np.isfinite(np.asarray(ops.cast(output, "float32"))))


def test_transformer_ponder_steps(rng):
    config = TransformerConfig.preset(
        "tiny", vocab_size=30, universal_steps=5, adaptive_computation=True
    )
    model = Transformer(config)
    source = rng.integers(4, 30, size=(2, 6))
    source[1, 3:] = 0
    target = rng.integers(4, 30, size=(2, 4))
    steps = model.ponder_steps({"source_ids": source, "target_ids": target})
    encoder = np.asarray(steps["encoder"])
    assert encoder.shape == (2, 6) and np.all(encoder[1, 3:] == 0)
    assert np.all((encoder[source != 0] >= 1) & (encoder[source != 0] <= 5))
    fixed = Transformer(TransformerConfig.preset("tiny", vocab_size=30, universal_steps=3))
    np.testing.assert_array_equal(
        np.asarray(fixed.ponder_steps({"source_ids": source, "target_ids": target})["encoder"]),
        3.0 * (source != 0),
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"adaptive_computation": True}, "universal_steps"),
        ({"universal_steps": -1}, "non-negative"),
        ({"universal_steps": 2, "halting_threshold": 1.5}, "halting_threshold"),
        ({"universal_steps": 2, "ponder_cost": -0.1}, "ponder_cost"),
        ({"universal_steps": 2, "memory_length": 4, "position": "shaw"}, "memory_length=0"),
    ],
)
def test_universal_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**overrides)


def test_the_benchmarks_universal_block_matches_vanillas_parameters():
    """benchmarks/universal.py compares at equal parameters: its width must deliver that."""
    from tests import benchmark_module

    universal_benchmark = benchmark_module("universal")
    block_parameters = universal_benchmark.block_parameters
    matched_width = universal_benchmark.matched_width
    width, vanilla = matched_width(64, 4, 256, layers=2, universal_steps=4)
    universal = block_parameters(64, 4, width, universal_steps=4)
    assert abs(universal - vanilla) / vanilla < 0.01 and width % 32 == 0
    assert block_parameters(64, 4, 256, layers=4) > 1.9 * block_parameters(64, 4, 256, layers=2)
