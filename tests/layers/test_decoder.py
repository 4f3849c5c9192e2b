import numpy as np
import pytest
from keras import ops

from tests.layer_testing import run_layer_test
from tfx_transformer.layers import Decoder, DecoderBlock, causal_mask

BLOCK = dict(d_model=16, num_heads=4, d_ff=32, dropout=0.1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_round_trips_and_cannot_see_the_future(norm_first, rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    memory = rng.normal(size=(2, 6, 16)).astype("float32")
    masks = {"self_attention_mask": causal_mask(5), "cross_attention_mask": np.ones((2, 1, 6), bool)}
    block, output = run_layer_test(
        DecoderBlock, {**BLOCK, "norm_first": norm_first}, (x, memory), masks
    )
    changed = x.copy()
    changed[:, 3:] += 5.0
    again = ops.convert_to_numpy(block(changed, memory, **masks))
    np.testing.assert_allclose(again[:, :3], output[:, :3], atol=1e-5)
    assert not np.allclose(again[:, 3:], output[:, 3:])


def test_decoder_block_ignores_masked_memory(rng):
    block = DecoderBlock(**BLOCK)
    x = rng.normal(size=(1, 3, 16)).astype("float32")
    memory = rng.normal(size=(1, 6, 16)).astype("float32")
    cross = np.array([[[True] * 4 + [False] * 2]])
    base = ops.convert_to_numpy(block(x, memory, cross_attention_mask=cross))
    memory[:, 4:] = 100.0
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(x, memory, cross_attention_mask=cross)), base, atol=1e-5
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_cached_steps_equal_the_full_pass(norm_first, rng):
    decoder = Decoder(3, **BLOCK, norm_first=norm_first)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    memory = rng.normal(size=(2, 4, 16)).astype("float32")
    source_mask = np.array([[[True] * 4], [[True, True, False, False]]])
    run_layer_test(
        Decoder,
        {"num_layers": 2, **BLOCK, "norm_first": norm_first},
        (x, memory),
        {"self_attention_mask": causal_mask(6), "cross_attention_mask": source_mask},
    )
    full = ops.convert_to_numpy(
        decoder(x, memory, self_attention_mask=causal_mask(6), cross_attention_mask=source_mask)
    )
    cache = decoder.empty_self_attention_cache(2, 6)
    cross = decoder.project_cross_attention_cache(memory)
    assert [tuple(t.shape) for pair in cache for t in pair] == [(2, 4, 6, 4)] * 6  # 3 blocks
    assert [tuple(t.shape) for pair in cross for t in pair] == [(2, 4, 4, 4)] * 6
    assert_cached_steps_equal(decoder, x, memory, full, source_mask)


def assert_cached_steps_equal(decoder, x, memory, full, source_mask=None):
    """Decoding x one position at a time through the caches reproduces `full`, the full pass."""
    batch, length = x.shape[:2]
    cache = decoder.empty_self_attention_cache(batch, length)
    cross = decoder.project_cross_attention_cache(memory)
    for t in range(length):
        step, cache = decoder(
            x[:, t : t + 1],
            None,
            self_attention_mask=causal_mask(1, length, query_offset=t),
            cross_attention_mask=source_mask,
            self_attention_cache=cache,
            cache_update_index=t,
            cross_attention_cache=cross,
        )
        np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], full[:, t], atol=1e-5)


def test_decoder_returns_self_and_cross_weights(rng):
    decoder = Decoder(2, **BLOCK)
    x = rng.normal(size=(1, 3, 16)).astype("float32")
    memory = rng.normal(size=(1, 5, 16)).astype("float32")
    _, self_weights, cross_weights = decoder(x, memory, return_attention_scores=True)
    assert [tuple(w.shape) for w in self_weights] == [(1, 4, 3, 3)] * 2
    assert [tuple(w.shape) for w in cross_weights] == [(1, 4, 3, 5)] * 2


def test_decoder_block_needs_memory_or_cache():
    block = DecoderBlock(**BLOCK)
    with pytest.raises(ValueError, match="encoder_output"):
        block(np.zeros((1, 2, 16), "float32"))
