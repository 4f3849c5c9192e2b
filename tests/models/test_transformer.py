import keras
import numpy as np
import pytest
from keras import ops

from tfx_transformer import Transformer, TransformerConfig

VOCAB = 40


def tiny_model(**overrides):
    return Transformer(TransformerConfig.preset("tiny", vocab_size=VOCAB, **overrides))


def batch(rng, b=3, s=7, t=6):
    source = rng.integers(4, VOCAB, size=(b, s))
    target = rng.integers(4, VOCAB, size=(b, t))
    return source, target


def logits(model, source, target, **kwargs):
    return ops.convert_to_numpy(model({"source_ids": source, "target_ids": target}, **kwargs))


VARIANTS = [
    {},
    {"share_embeddings": False},
    {"position": "learned"},
    {"norm_first": True},
    {"score": "cosine"},
    {"position": "shaw", "max_relative_distance": 3},
    {"position": "tener"},
    {"linformer_length": 8},
    {"universal_steps": 3},
    {"universal_steps": 4, "adaptive_computation": True, "position": "tener"},
    {"universal_steps": 2, "adaptive_computation": True, "linformer_length": 8},
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_future_target_tokens_do_not_change_earlier_logits(overrides, rng):
    model = tiny_model(**overrides)
    source, target = batch(rng)
    base = logits(model, source, target)
    assert base.shape == (3, 6, VOCAB) and base.dtype == np.float32
    changed = target.copy()
    changed[:, 3:] = rng.integers(4, VOCAB, size=(3, 3))
    again = logits(model, source, changed)
    # Inputs at positions > 2 changed: logits at positions <= 2 must not, later ones must.
    np.testing.assert_allclose(again[:, :3], base[:, :3], atol=1e-5)
    assert not np.allclose(again[:, 3:], base[:, 3:], atol=1e-3)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_appended_padding_does_not_change_real_positions(overrides, rng):
    model = tiny_model(**overrides)
    source, target = batch(rng)
    base = logits(model, source, target)
    padded_source = np.pad(source, ((0, 0), (0, 5)))
    padded_target = np.pad(target, ((0, 0), (0, 4)))
    again = logits(model, padded_source, padded_target)
    np.testing.assert_allclose(again[:, :6], base, atol=1e-5)


def test_a_sample_does_not_depend_on_its_batch(rng):
    model = tiny_model()
    source, target = batch(rng, b=4)
    source[1, 4:] = 0
    target[2, 3:] = 0
    together = logits(model, source, target)
    for i in range(4):
        alone = logits(model, source[i : i + 1], target[i : i + 1])
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def test_source_padding_is_ignored_wherever_it_sits_in_the_batch(rng):
    model = tiny_model()
    source, target = batch(rng, b=2)
    source[0, 5:] = 0
    base = logits(model, source, target)
    source[0, 5:] = 0  # still padding, but a different garbage in the other row must not leak
    source[1] = rng.integers(4, VOCAB, size=7)
    np.testing.assert_allclose(logits(model, source, target)[0], base[0], atol=1e-5)


def test_mixed_bfloat16_gives_float32_logits_without_nan_on_fully_padded_rows(rng):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_model()
    assert model.compute_dtype == "bfloat16"
    source, target = batch(rng)
    source[1] = 0  # a fully padded source row
    target[2] = 0  # a fully padded target row
    out = model({"source_ids": source, "target_ids": target})
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(ops.convert_to_numpy(out)))
    assert all(v.dtype == "float32" for v in model.weights)


def test_shared_embeddings_are_one_matrix():
    shared = tiny_model()
    separate = tiny_model(share_embeddings=False)
    assert shared.source_embedding is shared.target_embedding
    d = 64
    assert separate.count_params() - shared.count_params() == VOCAB * d + (d * VOCAB + VOCAB)


def test_config_round_trip_rebuilds_the_same_model(rng):
    model = tiny_model(position="learned")
    config = model.get_config()
    clone = Transformer.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    source, target = batch(rng)
    np.testing.assert_array_equal(logits(clone, source, target), logits(model, source, target))


def test_wrong_inputs_get_a_clear_error(rng):
    model = tiny_model()
    with pytest.raises(ValueError, match="source_ids"):
        model({"src": np.ones((1, 2), "int32")})
    with pytest.raises(TypeError, match="TransformerConfig"):
        Transformer("base")


def test_attention_maps_are_returned_explicitly(rng):
    model = tiny_model()
    source, target = batch(rng, b=2, s=5, t=4)
    maps = model.attention_maps({"source_ids": source, "target_ids": target})
    assert [tuple(m.shape) for m in maps["encoder_self"]] == [(2, 4, 5, 5)] * 2
    assert [tuple(m.shape) for m in maps["decoder_cross"]] == [(2, 4, 4, 5)] * 2
    rows = ops.convert_to_numpy(maps["decoder_self"][0]).sum(-1)
    np.testing.assert_allclose(rows, 1.0, rtol=1e-5)
    assert not hasattr(model.decoder.blocks[0], "last_attention_scores")


def test_model_trains_with_fit(rng):
    model = tiny_model()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    source, target = batch(rng, b=8)
    history = model.fit(
        {"source_ids": source, "target_ids": target}, target, epochs=2, verbose=0
    )
    assert np.isfinite(history.history["loss"][-1])
