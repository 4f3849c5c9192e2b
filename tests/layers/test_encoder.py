import numpy as np
import pytest

from tests import reference
from tests.layer_testing import run_layer_test
from tfx_transformer.layers import Encoder, EncoderBlock

BLOCK = dict(d_model=16, num_heads=4, d_ff=32, dropout=0.1)


def _weights(layer):
    """Weights by path below the layer: "feed_forward/inner/kernel"."""
    return {v.path.split(layer.name + "/", 1)[1]: np.asarray(v) for v in layer.weights}


def numpy_encoder_block(block, x, mask, norm_first):
    w = _weights(block)
    eps = block.layer_norm_epsilon

    def norm(name, h):
        return reference.layer_norm(h, w[f"{name}/gamma"], w[f"{name}/beta"], eps)

    def attend(h):
        return reference.multi_head_attention(block.self_attention, h, h, mask)[0]

    def ffn(h):
        hidden = np.maximum(h @ w["feed_forward/inner/kernel"] + w["feed_forward/inner/bias"], 0)
        return hidden @ w["feed_forward/outer/kernel"] + w["feed_forward/outer/bias"]

    if norm_first:
        x = x + attend(norm("self_attention_norm", x))
        return x + ffn(norm("feed_forward_norm", x))
    x = norm("self_attention_norm", x + attend(x))
    return norm("feed_forward_norm", x + ffn(x))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_matches_numpy_reference(norm_first, rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    mask = np.ones((2, 5, 5), bool)
    mask[1, :, 3:] = False
    block, output = run_layer_test(
        EncoderBlock, {**BLOCK, "norm_first": norm_first}, (x,), {"attention_mask": mask}
    )
    expected = numpy_encoder_block(block, x, mask, norm_first)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)


def test_encoder_block_dropout_only_in_training(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    block = EncoderBlock(**{**BLOCK, "dropout": 0.5})
    np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(block(x)))
    assert not np.allclose(np.asarray(block(x, training=True)), np.asarray(block(x)))


def test_the_feed_forward_and_attention_dropout_rates_are_their_own_when_given(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    same = EncoderBlock(**{**BLOCK, "dropout": 0.5})
    same(x)
    assert same.feed_forward.dropout == same.self_attention.dropout == 0.5
    # Dropout only on the sublayers' outputs (the paper): the sublayers themselves are
    # deterministic while training, the block is not.
    paper = EncoderBlock(**{**BLOCK, "dropout": 0.5, "attention_dropout": 0.0, "ffn_dropout": 0.0})
    paper(x)
    assert paper.feed_forward.dropout == paper.self_attention.dropout == 0.0
    for sublayer in (same.feed_forward, paper.feed_forward):
        kept = [np.asarray(sublayer(x, training=True)) for _ in range(2)]
        assert np.array_equal(*kept) == (sublayer is paper.feed_forward)
    assert not np.allclose(np.asarray(paper(x, training=True)), np.asarray(paper(x)))
    assert EncoderBlock.from_config(paper.get_config()).ffn_dropout == 0.0


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_applies_its_blocks_in_order(norm_first, rng):
    x = rng.normal(size=(2, 4, 16)).astype("float32")
    encoder, output = run_layer_test(
        Encoder, {"num_layers": 2, **BLOCK, "norm_first": norm_first}, (x,)
    )
    h = x
    for block in encoder.blocks:
        h = numpy_encoder_block(block, h, None, norm_first)
    if norm_first:  # pre-LN stacks end with a LayerNorm
        gamma, beta = [np.asarray(w) for w in encoder.final_norm.weights]
        h = reference.layer_norm(h, gamma, beta, 1e-6)
    np.testing.assert_allclose(output, h, rtol=1e-4, atol=1e-4)
    _, weights = encoder(x, return_attention_scores=True)
    assert len(weights) == 2 and tuple(weights[0].shape) == (2, 4, 4, 4)


def test_block_arguments_are_checked():
    with pytest.raises(ValueError, match="dropout=1.5"):
        EncoderBlock(16, 4, 32, dropout=1.5)
    with pytest.raises(ValueError, match="d_ff=0"):
        EncoderBlock(16, 4, 0)
    with pytest.raises(ValueError, match="ffn_dropout=-0.1"):
        EncoderBlock(16, 4, 32, ffn_dropout=-0.1)
