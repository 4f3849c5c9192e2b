"""Relative position attention: Shaw et al. and TENER against NumPy transcriptions of the papers,
and the properties they exist for (shift invariance, left differs from right, clipping)."""

import numpy as np
import pytest
from keras import ops

from tests.layer_testing import run_layer_test
from tests.layers.test_decoder import assert_cached_steps_equal
from tfx_transformer.layers import (
    Decoder,
    Encoder,
    MultiHeadAttention,
    ShawRelativeAttention,
    SinusoidalPositionEncoding,
    TenerAttention,
    TransformerXLAttention,
    causal_mask,
    sinusoid,
)

D_MODEL, HEADS = 16, 4


def numpy_heads(layer, x):
    """q, k, v as [h, T, d_head] for one sequence x [T, d_model], from the layer's own kernels."""

    def project(dense):
        kernel, bias = (ops.convert_to_numpy(w) for w in dense.weights)
        return np.einsum("td,dhk->htk", x, kernel) + bias[:, None, :]

    return project(layer.query_dense), project(layer.key_dense), project(layer.value_dense)


def numpy_output(layer, context):
    kernel, bias = (ops.convert_to_numpy(w) for w in layer.output_dense.weights)
    return np.einsum("htk,hkd->td", context, kernel) + bias


def softmax(scores):
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def shaw_reference(layer, x):
    """Shaw et al. 2018, equations (3)-(5), one position pair at a time."""
    q, k, v = numpy_heads(layer, x)
    table_k = ops.convert_to_numpy(layer.relative_keys)
    table_v = ops.convert_to_numpy(layer.relative_values)
    heads, length, d = q.shape
    clip = layer.max_distance
    context = np.zeros_like(q)
    for h in range(heads):
        e = np.zeros((length, length))
        for i in range(length):
            for j in range(length):
                a_k = table_k[np.clip(j - i, -clip, clip) + clip]
                e[i, j] = q[h, i] @ (k[h, j] + a_k) / np.sqrt(d)
        alpha = softmax(e)
        for i in range(length):
            for j in range(length):
                a_v = table_v[np.clip(j - i, -clip, clip) + clip]
                context[h, i] += alpha[i, j] * (v[h, j] + a_v)
    return numpy_output(layer, context)


def tener_reference(layer, x):
    """TENER (Yan et al. 2019), equations (14)-(18) with R_{t-j} the sinusoid of t - j."""
    q, k, v = numpy_heads(layer, x)
    u = ops.convert_to_numpy(layer.content_bias)
    w = ops.convert_to_numpy(layer.position_bias)
    heads, length, d = q.shape
    inverse_frequency = 10000.0 ** (-(np.arange(d) // 2 * 2) / d)
    context = np.zeros_like(q)
    for h in range(heads):
        scores = np.zeros((length, length))
        for t in range(length):
            for j in range(length):
                angles = (t - j) * inverse_frequency
                r = np.where(np.arange(d) % 2 == 0, np.sin(angles), np.cos(angles))
                scores[t, j] = q[h, t] @ k[h, j] + q[h, t] @ r + u[h] @ k[h, j] + w[h] @ r
        context[h] = softmax(scores) @ v[h]  # no 1/sqrt(d): TENER's un-scaled attention
    return numpy_output(layer, context)


def xl_reference(layer, x, memory_length=0):
    """Transformer-XL (Dai et al. 2019), equation (5) with W_R R_{i-j}; the first
    `memory_length` rows of x are memory: keys and values only, queries start after them."""
    q, k, v = numpy_heads(layer, x)
    q = q[:, memory_length:]
    u = ops.convert_to_numpy(layer.content_bias)
    w = ops.convert_to_numpy(layer.position_bias)
    w_r = ops.convert_to_numpy(layer.position_dense.kernel)  # (d_model, h, d_head)
    heads, queries, d = q.shape
    keys = k.shape[1]
    inverse_frequency = 10000.0 ** (-(np.arange(D_MODEL) // 2 * 2) / D_MODEL)
    context = np.zeros_like(q)
    for h in range(heads):
        scores = np.zeros((queries, keys))
        for t in range(queries):
            i = t + memory_length
            for j in range(keys):
                angles = (i - j) * inverse_frequency
                r = np.where(np.arange(D_MODEL) % 2 == 0, np.sin(angles), np.cos(angles)) @ w_r[:, h]
                scores[t, j] = ((q[h, t] + u[h]) @ k[h, j] + (q[h, t] + w[h]) @ r) / np.sqrt(d)
        context[h] = softmax(scores) @ v[h]
    return numpy_output(layer, context)


def randomize_biases(layer, rng):
    """Zero-initialized biases would hide a mistake in their terms."""
    for name in ("content_bias", "position_bias"):
        if hasattr(layer, name):
            bias = getattr(layer, name)
            bias.assign(rng.normal(size=tuple(bias.shape)).astype("float32"))
    return layer


LAYERS = {
    "shaw": (lambda: ShawRelativeAttention(HEADS, max_distance=3), shaw_reference),
    "tener": (lambda: TenerAttention(HEADS), tener_reference),
    "transformer_xl": (lambda: TransformerXLAttention(HEADS), xl_reference),
}


@pytest.mark.parametrize("kind", LAYERS)
def test_relative_attention_equals_the_papers_equations(kind, rng):
    make, reference = LAYERS[kind]
    layer = make()
    x = rng.normal(size=(2, 7, D_MODEL)).astype("float32")
    layer(x)
    randomize_biases(layer, rng)
    output = ops.convert_to_numpy(layer(x))
    for row in range(2):
        np.testing.assert_allclose(output[row], reference(layer, x[row]), atol=1e-4)


@pytest.mark.parametrize(
    "layer_class, kwargs",
    [
        (ShawRelativeAttention, {"num_heads": HEADS, "max_distance": 4, "dropout": 0.1}),
        (ShawRelativeAttention, {"num_heads": HEADS, "use_values": False}),
        (TenerAttention, {"num_heads": HEADS, "scale": True, "dropout": 0.1}),
        (TransformerXLAttention, {"num_heads": HEADS, "dropout": 0.1}),
    ],
)
def test_relative_layers_round_trip(layer_class, kwargs, rng):
    x = rng.normal(size=(2, 5, D_MODEL)).astype("float32")
    mask = np.tril(np.ones((5, 5), bool))[None]
    layer, _ = run_layer_test(layer_class, kwargs, (x,), {"attention_mask": mask})
    has_value_table = any("relative_values" in w.path for w in layer.weights)
    assert has_value_table == (layer_class is ShawRelativeAttention and kwargs.get("use_values", True))


def shifted_outputs(layer, rng, shift=3):
    """Outputs for x, and for x moved `shift` positions right behind masked junk."""
    x = rng.normal(size=(2, 6, D_MODEL)).astype("float32")
    junk = rng.normal(size=(2, shift, D_MODEL)).astype("float32") * 10
    moved = np.concatenate([junk, x], axis=1)
    mask = np.ones((2, 1, 6 + shift), bool)
    mask[:, :, :shift] = False
    plain = ops.convert_to_numpy(layer(x))
    shifted = ops.convert_to_numpy(layer(moved, attention_mask=mask))[:, shift:]
    return plain, shifted


@pytest.mark.parametrize("kind", ["shaw", "tener", "transformer_xl"])
def test_shifting_every_position_leaves_the_encoder_unchanged(kind, rng):
    encoder = Encoder(2, d_model=D_MODEL, num_heads=HEADS, d_ff=32, relative_attention=kind)
    plain, shifted = shifted_outputs(encoder, rng)
    np.testing.assert_allclose(shifted, plain, atol=1e-5)


def test_absolute_positions_are_not_shift_invariant_for_contrast(rng):
    encoder = Encoder(2, d_model=D_MODEL, num_heads=HEADS, d_ff=32)
    positions = SinusoidalPositionEncoding()

    class WithPositions:
        def __call__(self, x, attention_mask=None):
            return encoder(x + positions(x), attention_mask=attention_mask)

    plain, shifted = shifted_outputs(WithPositions(), rng)
    assert not np.allclose(shifted, plain, atol=1e-3)


def scores_by_distance(layer, rng):
    """Scores of one query vector against one key vector at every position: [T, S]."""
    layer.build((None, None, D_MODEL))
    head = rng.normal(size=(1, HEADS, 1, layer.head_size)).astype("float32")
    queries = np.repeat(head, 12, axis=2)
    keys = np.repeat(rng.normal(size=(1, HEADS, 1, layer.head_size)).astype("float32"), 12, axis=2)
    return ops.convert_to_numpy(layer.compute_scores(queries, keys))[0, 0]


@pytest.mark.parametrize("kind", ["shaw", "tener", "transformer_xl"])
def test_scores_tell_left_from_right_and_depend_only_on_the_offset(kind, rng):
    layer = LAYERS[kind][0]()
    scores = scores_by_distance(layer, rng)
    for k in (1, 2, 3):
        # the same offset anywhere gives the same score ...
        along = np.diagonal(scores, offset=k)
        np.testing.assert_allclose(along, along[0], atol=1e-5)
        # ... and offsets +k and -k give different ones
        assert abs(scores[5, 5 + k] - scores[5, 5 - k]) > 1e-3


def test_transformer_xl_queries_after_a_memory_see_the_true_distances(rng):
    layer = TransformerXLAttention(HEADS)
    x = rng.normal(size=(1, 9, D_MODEL)).astype("float32")
    layer(x)
    randomize_biases(layer, rng)
    memory, current = x[:, :4], x[:, 4:]
    keys_values = np.concatenate([memory, current], axis=1)
    mask = ops.convert_to_numpy(causal_mask(5, 9, query_offset=4))
    output = layer(current, keys_values, attention_mask=mask, query_offset=4)
    expected_all = ops.convert_to_numpy(layer(x, attention_mask=causal_mask(9)))
    np.testing.assert_allclose(ops.convert_to_numpy(output)[0], expected_all[0, 4:], atol=1e-5)
    unmasked = layer(current, keys_values, query_offset=4)
    np.testing.assert_allclose(
        ops.convert_to_numpy(unmasked)[0], xl_reference(layer, x[0], memory_length=4), atol=1e-4
    )


def test_absolute_sinusoids_cannot_tell_left_from_right():
    # TENER's motivation: PE_t . PE_{t+k} == PE_t . PE_{t-k}, while the relative encoding differs.
    table = ops.convert_to_numpy(sinusoid(np.arange(40), 16))
    for k in (1, 3, 7):
        assert table[20] @ table[20 + k] == pytest.approx(table[20] @ table[20 - k], abs=1e-5)
    relative = ops.convert_to_numpy(sinusoid(np.array([4, -4]), 16))
    assert not np.allclose(relative[0], relative[1])


def test_shaw_clips_distances_beyond_max_distance(rng):
    layer = ShawRelativeAttention(HEADS, max_distance=3)
    scores = scores_by_distance(layer, rng)
    beyond = [scores[0, 3 + extra] for extra in (1, 2, 5, 8)]  # offsets 4, 5, 8, 11: all clip to 3
    np.testing.assert_allclose(beyond, scores[0, 3], atol=1e-5)
    np.testing.assert_allclose(scores[11, 0], scores[11, 11 - 5], atol=1e-5)  # -11 and -5 clip to -3
    assert abs(scores[0, 2] - scores[0, 3]) > 1e-4  # within the window distances differ


@pytest.mark.parametrize("kind", ["shaw", "tener", "transformer_xl"])
def test_cached_decoding_equals_the_full_pass(kind, rng):
    decoder = Decoder(2, d_model=D_MODEL, num_heads=HEADS, d_ff=32, relative_attention=kind)
    x = rng.normal(size=(2, 6, D_MODEL)).astype("float32")
    memory = rng.normal(size=(2, 4, D_MODEL)).astype("float32")
    full = ops.convert_to_numpy(decoder(x, memory, self_attention_mask=causal_mask(6)))
    assert_cached_steps_equal(decoder, x, memory, full)


def test_cross_attention_stays_content_only():
    decoder = Decoder(1, d_model=D_MODEL, num_heads=HEADS, d_ff=32, relative_attention="shaw")
    decoder.build((None, None, D_MODEL), (None, None, D_MODEL))
    block = decoder.blocks[0]
    assert isinstance(block.self_attention, ShawRelativeAttention)
    assert type(block.cross_attention) is MultiHeadAttention


def test_relative_layer_argument_errors():
    with pytest.raises(ValueError, match="max_distance"):
        ShawRelativeAttention(HEADS, max_distance=0)
    with pytest.raises(ValueError, match="scaled dot"):
        ShawRelativeAttention(HEADS, score="cosine")
    with pytest.raises(ValueError, match="dot score"):
        TenerAttention(HEADS, score="additive")
    with pytest.raises(ValueError, match="relative_attention"):
        Encoder(1, d_model=8, num_heads=2, d_ff=8, relative_attention="rope")
