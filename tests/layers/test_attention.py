import keras
import numpy as np
import pytest
from keras import ops

from tests import reference
from tests.layer_testing import run_layer_test
from tfx_transformer.layers import Attention, MultiHeadAttention, causal_mask


@pytest.mark.parametrize("score", ["scaled_dot", "dot", "cosine", "additive"])
def test_attention_matches_numpy_reference(score, rng):
    q = rng.normal(size=(2, 3, 4)).astype("float32")
    k = rng.normal(size=(2, 5, 4)).astype("float32")
    v = rng.normal(size=(2, 5, 6)).astype("float32")
    mask = rng.random((2, 3, 5)) > 0.3
    mask[..., 0] = True
    layer, output = run_layer_test(
        Attention,
        {"score": score, "cosine_scale": 2.0} if score == "cosine" else {"score": score},
        (q, k, v),
        {"attention_mask": mask},
        expect_weights=score == "additive",
    )
    additive = [np.asarray(w) for w in layer.weights] if score == "additive" else None
    expected, expected_weights = reference.attention(
        q, k, v, score, mask, additive=additive, cosine_scale=2.0
    )
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    _, weights = layer(q, k, v, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, rtol=1e-5, atol=1e-6)
    assert np.all(ops.convert_to_numpy(weights)[~mask] == 0.0)


def test_scaled_dot_product_by_hand():
    # One query, two keys: scores 1/sqrt(2) * [2, 0] -> softmax -> weighted sum of values.
    q = np.array([[[1.0, 1.0]]], "float32")
    k = np.array([[[1.0, 1.0], [1.0, -1.0]]], "float32")
    v = np.array([[[10.0], [20.0]]], "float32")
    w0 = 1.0 / (1.0 + np.exp(-2.0 / np.sqrt(2.0)))
    out = Attention()(q, k, v)
    np.testing.assert_allclose(ops.convert_to_numpy(out), [[[10 * w0 + 20 * (1 - w0)]]], rtol=1e-6)


def test_fully_masked_rows_are_finite_in_half_precision():
    q = np.ones((1, 2, 4), "float16")
    mask = np.zeros((1, 2, 3), bool)
    out = Attention(dtype="float16")(q, q[:, :1].repeat(3, 1), attention_mask=mask)
    assert np.all(np.isfinite(ops.convert_to_numpy(out)))


def test_attention_rejects_unknown_score():
    with pytest.raises(ValueError, match="score.*Received: score='tanh'"):
        Attention(score="tanh")


def test_multi_head_attention_matches_keras_with_copied_weights(rng):
    d_model, heads = 16, 4
    query = rng.normal(size=(2, 5, d_model)).astype("float32")
    value = rng.normal(size=(2, 7, d_model)).astype("float32")
    mask = rng.random((2, 5, 7)) > 0.4
    mask[..., 0] = True
    ours, output = run_layer_test(
        MultiHeadAttention,
        {"num_heads": heads, "d_model": d_model},
        (query, value),
        {"attention_mask": mask},
    )
    theirs = keras.layers.MultiHeadAttention(heads, key_dim=d_model // heads)
    theirs(query, value, attention_mask=mask)
    theirs.set_weights(ours.get_weights())
    expected = ops.convert_to_numpy(theirs(query, value, attention_mask=mask))
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    numpy_expected, _ = reference.multi_head_attention(ours, query, value, mask)
    np.testing.assert_allclose(output, numpy_expected, rtol=1e-4, atol=1e-5)


def test_head_size_is_d_model_over_heads():
    layer = MultiHeadAttention(8, d_model=64)
    layer(np.zeros((1, 2, 64), "float32"))
    assert layer.query_dense.kernel.shape == (64, 8, 8)
    assert layer.count_params() == 4 * (64 * 64 + 64)


def test_multi_head_attention_argument_errors():
    with pytest.raises(ValueError, match="divisible.*d_model=10, num_heads=4"):
        MultiHeadAttention(4, d_model=10)
    with pytest.raises(ValueError, match="num_heads=0"):
        MultiHeadAttention(0)


def test_self_attention_cache_step_by_step_equals_full_pass(rng):
    layer = MultiHeadAttention(2, 8)
    x = rng.normal(size=(3, 6, 8)).astype("float32")
    full = ops.convert_to_numpy(layer(x, attention_mask=causal_mask(6)))
    cache = (np.zeros((3, 2, 6, 4), "float32"), np.zeros((3, 2, 6, 4), "float32"))
    for t in range(6):
        step, cache = layer(
            x[:, t : t + 1],
            attention_mask=causal_mask(1, 6, query_offset=t),
            cache=cache,
            cache_update_index=t,
        )
        np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], full[:, t], atol=1e-5)


def test_cross_attention_reuses_projected_keys_and_values(rng):
    layer = MultiHeadAttention(2, 8)
    query = rng.normal(size=(2, 3, 8)).astype("float32")
    memory = rng.normal(size=(2, 5, 8)).astype("float32")
    direct = ops.convert_to_numpy(layer(query, memory))
    cache = layer.project_key_value(memory)
    assert [tuple(c.shape) for c in cache] == [(2, 2, 5, 4)] * 2
    cached, returned_cache = layer(query, None, cache=cache)
    np.testing.assert_allclose(ops.convert_to_numpy(cached), direct, atol=1e-6)
    for returned, given in zip(returned_cache, cache):
        np.testing.assert_array_equal(ops.convert_to_numpy(returned), ops.convert_to_numpy(given))


@pytest.mark.parametrize("score", ["dot", "cosine", "additive"])
def test_multi_head_attention_with_other_scores(score, rng):
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    run_layer_test(MultiHeadAttention, {"num_heads": 2, "score": score}, (x,))
