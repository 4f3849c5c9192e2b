"""Linformer attention: equal to full attention with identity projections, blind to padding."""

import numpy as np
import pytest
from keras import ops

from tests.layer_testing import run_layer_test
from tfx_transformer.layers import Encoder, LinformerAttention, MultiHeadAttention, causal_mask

D_MODEL, HEADS = 16, 4


def test_identity_projections_with_k_equal_to_n_give_full_attention(rng):
    n = 7
    linformer = LinformerAttention(HEADS, max_length=n, projected_length=n, d_model=D_MODEL)
    full = MultiHeadAttention(HEADS, d_model=D_MODEL)
    x = rng.normal(size=(2, n, D_MODEL)).astype("float32")
    linformer(x)
    full(x)
    for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
        getattr(full, name).set_weights(getattr(linformer, name).get_weights())
    linformer.key_projection.assign(np.eye(n, dtype="float32"))
    linformer.value_projection.assign(np.eye(n, dtype="float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(linformer(x)), ops.convert_to_numpy(full(x)), atol=1e-5
    )
    # With projections that are not the identity, it is a different function.
    linformer.key_projection.assign(rng.normal(size=(n, n)).astype("float32"))
    assert not np.allclose(ops.convert_to_numpy(linformer(x)), ops.convert_to_numpy(full(x)), atol=1e-3)


@pytest.mark.parametrize("share", [False, True])
def test_padded_positions_do_not_change_real_outputs(share, rng):
    layer = LinformerAttention(HEADS, max_length=32, projected_length=4, share_projection=share)
    x = rng.normal(size=(2, 10, D_MODEL)).astype("float32")
    mask = np.ones((2, 1, 10), bool)
    mask[1, :, 6:] = False
    base = ops.convert_to_numpy(layer(x, attention_mask=mask))
    changed = x.copy()
    changed[1, 6:] = 100.0  # the padding holds anything
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(changed, attention_mask=mask))[1, :6], base[1, :6], atol=1e-5
    )
    longer = np.concatenate([x, rng.normal(size=(2, 5, D_MODEL)).astype("float32")], axis=1)
    longer_mask = np.concatenate([mask, np.zeros((2, 1, 5), bool)], axis=2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(longer, attention_mask=longer_mask))[:, :10][mask[:, 0]],
        base[mask[:, 0]],
        atol=1e-5,
    )
    weights = layer(x, attention_mask=mask, return_attention_scores=True)[1]
    assert tuple(weights.shape) == (2, HEADS, 10, 4)  # n x k, not n x n
    assert len(layer.weights) == (9 if share else 10)  # q, k, v, o kernels and biases, E (and F)


def test_round_trip_and_argument_errors(rng):
    x = rng.normal(size=(2, 6, D_MODEL)).astype("float32")
    mask = np.ones((2, 1, 6), bool)
    layer, _ = run_layer_test(
        LinformerAttention,
        {"num_heads": HEADS, "max_length": 8, "projected_length": 3, "dropout": 0.1},
        (x,),
        {"attention_mask": mask},
    )
    with pytest.raises(ValueError, match="key padding mask"):
        layer(x, attention_mask=causal_mask(6))
    with pytest.raises(ValueError, match="max_length=8"):
        layer(rng.normal(size=(1, 9, D_MODEL)).astype("float32"))
    with pytest.raises(ValueError, match="self-attention"):
        layer(x, rng.normal(size=(2, 6, D_MODEL)).astype("float32"))
    with pytest.raises(ValueError, match="projected_length"):
        LinformerAttention(HEADS, max_length=8, projected_length=0)
    with pytest.raises(ValueError, match="dot score"):
        LinformerAttention(HEADS, max_length=8, score="additive")


def test_encoder_uses_linformer_only_when_asked(rng):
    encoder = Encoder(
        2, d_model=D_MODEL, num_heads=HEADS, d_ff=32, linformer_length=4, linformer_max_length=16
    )
    x = rng.normal(size=(2, 12, D_MODEL)).astype("float32")
    assert ops.convert_to_numpy(encoder(x, attention_mask=np.ones((2, 1, 12), bool))).shape == x.shape
    assert all(isinstance(block.self_attention, LinformerAttention) for block in encoder.blocks)
    with pytest.raises(ValueError, match="relative positions"):
        Encoder(1, d_model=8, num_heads=2, d_ff=8, linformer_length=4, linformer_max_length=8,
                relative_attention="shaw")
