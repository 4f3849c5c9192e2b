"""`.keras` save, then `keras.models.load_model` in a fresh process: identical outputs.

Every layer is saved inside a small functional model (the model is what `.keras` holds); the
Transformer is saved as itself. One subprocess loads them all, so the suite pays for one import.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfx_transformer as tt
from tfx_transformer import layers as L

RNG = np.random.default_rng(7)


def _floats(*shape):
    return RNG.normal(size=shape).astype("float32")


def _mask(*shape):
    mask = RNG.random(shape) > 0.3
    mask[..., 0] = True
    return mask


def _functional(layer, specs, call):
    """Wraps `layer` in a functional model whose inputs follow `specs` [(shape, dtype)]."""
    inputs = [keras.Input(shape=shape[1:], batch_size=shape[0], dtype=dtype) for shape, dtype in specs]
    return keras.Model(inputs, call(layer, *inputs))


def _case_attention(score):
    q, k, m = _floats(2, 3, 4), _floats(2, 5, 4), _mask(2, 3, 5)
    layer = L.Attention(score=score)
    model = _functional(
        layer,
        [(q.shape, "float32"), (k.shape, "float32"), (m.shape, "bool")],
        lambda lyr, a, b, c: lyr(a, b, attention_mask=c),
    )
    return model, [q, k, m]


def _case_mha():
    q, v, m = _floats(2, 3, 8), _floats(2, 5, 8), _mask(2, 3, 5)
    model = _functional(
        L.MultiHeadAttention(2, 8, dropout=0.1),
        [(q.shape, "float32"), (v.shape, "float32"), (m.shape, "bool")],
        lambda lyr, a, b, c: lyr(a, b, attention_mask=c),
    )
    return model, [q, v, m]


def _case_self_attention(layer):
    x, m = _floats(2, 5, 8), _mask(2, 5, 5)
    model = _functional(
        layer, [(x.shape, "float32"), (m.shape, "bool")], lambda lyr, a, b: lyr(a, attention_mask=b)
    )
    return model, [x, m]


def _case_single(layer, x, dtype="float32"):
    return _functional(layer, [(x.shape, dtype)], lambda lyr, a: lyr(a)), [x]


def _case_encoder(layer):
    x, m = _floats(2, 4, 8), _mask(2, 1, 4)
    model = _functional(
        layer, [(x.shape, "float32"), (m.shape, "bool")], lambda lyr, a, b: lyr(a, attention_mask=b)
    )
    return model, [x, m]


def _case_decoder(layer):
    x, memory, m = _floats(2, 4, 8), _floats(2, 5, 8), _mask(2, 1, 5)
    model = _functional(
        layer,
        [(x.shape, "float32"), (memory.shape, "float32"), (m.shape, "bool")],
        lambda lyr, a, b, c: lyr(
            a, b, self_attention_mask=L.causal_mask(4), cross_attention_mask=c
        ),
    )
    return model, [x, memory, m]


def _case_transformer(**overrides):
    config = tt.TransformerConfig.preset("tiny", vocab_size=50, num_encoder_layers=1, **overrides)
    model = tt.Transformer(config)
    source = RNG.integers(1, 50, size=(3, 6))
    source[0, 4:] = 0
    target = RNG.integers(1, 50, size=(3, 5))
    return model, {"source_ids": source, "target_ids": target}


def _case_tagger(**overrides):
    from tfx_transformer.models import TransformerTagger

    config = tt.TransformerConfig.preset("tiny", vocab_size=40, num_encoder_layers=1, **overrides)
    token_ids = RNG.integers(1, 40, size=(3, 6))
    token_ids[1, 3:] = 0
    return TransformerTagger(config, num_tags=5), {"token_ids": token_ids}


def _case_lm(**overrides):
    config = tt.TransformerConfig.preset("tiny", vocab_size=40, max_length=6, **overrides)
    inputs = {"token_ids": RNG.integers(1, 40, size=(2, 6))}
    if config.memory_length:
        inputs["context_ids"] = RNG.integers(1, 40, size=(2, 6))
    return tt.TransformerLM(config), inputs


BLOCK = dict(d_model=8, num_heads=2, d_ff=16)
CASES = {
    **{f"attention_{s}": lambda s=s: _case_attention(s) for s in L.SCORE_FUNCTIONS},
    "multi_head_attention": _case_mha,
    "shaw_attention": lambda: _case_self_attention(L.ShawRelativeAttention(2, max_distance=2)),
    "linformer_attention": lambda: _case_encoder(
        L.LinformerAttention(2, max_length=6, projected_length=3, share_projection=True)
    ),
    "transformer_xl_attention": lambda: _case_self_attention(L.TransformerXLAttention(2)),
    "tener_attention": lambda: _case_self_attention(L.TenerAttention(2, scale=True)),
    "token_embedding": lambda: _case_single(
        L.TokenEmbedding(20, 8), RNG.integers(0, 20, size=(2, 5)), "int32"
    ),
    "sinusoidal_position": lambda: _case_single(L.SinusoidalPositionEncoding(), _floats(2, 5, 8)),
    "learned_position": lambda: _case_single(L.LearnedPositionEmbedding(10), _floats(2, 5, 8)),
    "feed_forward": lambda: _case_single(L.PositionwiseFeedForward(16, activation="gelu"), _floats(2, 5, 8)),
    "encoder_block": lambda: _case_encoder(L.EncoderBlock(**BLOCK, norm_first=True)),
    "encoder": lambda: _case_encoder(L.Encoder(2, **BLOCK)),
    "decoder_block": lambda: _case_decoder(L.DecoderBlock(**BLOCK)),
    "decoder": lambda: _case_decoder(L.Decoder(2, **BLOCK, norm_first=True)),
    "universal_encoder_act": lambda: _case_encoder(
        L.UniversalEncoder(3, adaptive_computation=True, **BLOCK, norm_first=True)
    ),
    "universal_decoder": lambda: _case_decoder(L.UniversalDecoder(3, **BLOCK)),
    "transformer": _case_transformer,
    "transformer_unshared_learned": lambda: _case_transformer(
        share_embeddings=False, position="learned"
    ),
    "transformer_shaw": lambda: _case_transformer(position="shaw", relative_values=False,
                                                  ffn_dropout=0.0),
    "transformer_tener": lambda: _case_transformer(position="tener", norm_first=True),
    "transformer_linformer": lambda: _case_transformer(linformer_length=4),
    "transformer_universal_act": lambda: _case_transformer(
        universal_steps=3, adaptive_computation=True, position="shaw"
    ),
    "tagger_universal": lambda: _case_tagger(universal_steps=2),
    "tagger_tener": lambda: _case_tagger(position="tener"),
    "tagger_learned": lambda: _case_tagger(position="learned"),
    "lm_vanilla": lambda: _case_lm(),
    "lm_universal_act": lambda: _case_lm(universal_steps=3, adaptive_computation=True),
    "lm_transformer_xl": lambda: _case_lm(position="transformer_xl", memory_length=6, norm_first=True),
}

LOADER = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    import tfx_transformer  # registers the package's classes
    folder, names = sys.argv[1], json.loads(sys.argv[2])
    for name in names:
        model = keras.models.load_model(f"{folder}/{name}.keras")  # safe_mode=True
        data = np.load(f"{folder}/{name}.inputs.npz")
        if "arr_0" not in data.files:  # named inputs
            inputs = {key: data[key] for key in data.files}
        else:
            inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        np.save(f"{folder}/{name}.loaded.npy", keras.ops.convert_to_numpy(model(inputs)))
    """
)


@pytest.fixture(scope="module")
def saved_and_reloaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    expected = {}
    for name, make in CASES.items():
        keras.utils.set_random_seed(1)
        model, inputs = make()
        expected[name] = keras.ops.convert_to_numpy(model(inputs))
        model.save(folder / f"{name}.keras")
        if isinstance(inputs, dict):
            np.savez(folder / f"{name}.inputs.npz", **inputs)
        else:
            np.savez(folder / f"{name}.inputs.npz", *inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), json.dumps(list(CASES))],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, expected


@pytest.mark.parametrize("name", list(CASES))
def test_keras_file_reloads_in_a_fresh_process_with_identical_outputs(name, saved_and_reloaded):
    folder, expected = saved_and_reloaded
    loaded = np.load(folder / f"{name}.loaded.npy")
    np.testing.assert_allclose(loaded, expected[name], rtol=1e-6, atol=1e-6)


def test_reloaded_transformer_keeps_its_config(tmp_path):
    model, _ = _case_transformer(position="learned", norm_first=True)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again, tt.Transformer)
    assert again.model_config == model.model_config
    assert len(again.weights) == len(model.weights)
