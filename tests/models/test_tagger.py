"""`TransformerTagger`: masks, config, learning a direction-dependent task, and its export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import tfx_transformer as tt
from tfx_transformer.models import TransformerTagger

VOCAB, TAGS = 30, 4


def tagger(**overrides):
    config = tt.TransformerConfig.preset(
        "tiny", vocab_size=VOCAB, num_encoder_layers=1, **overrides
    )
    return TransformerTagger(config, num_tags=TAGS)


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "shaw", "tener"])
def test_padding_does_not_change_real_positions_and_is_never_tagged(position, rng):
    model = tagger(position=position)
    ids = rng.integers(2, VOCAB, size=(3, 6))
    logits = ops.convert_to_numpy(model(ids))
    assert logits.shape == (3, 6, TAGS) and logits.dtype == np.float32
    padded = np.pad(ids, ((0, 0), (0, 4)))
    np.testing.assert_allclose(ops.convert_to_numpy(model(padded))[:, :6], logits, atol=1e-5)
    tags = ops.convert_to_numpy(model.predict_tags(padded))
    assert (tags[:, 6:] == 0).all() and (tags[:, :6] > 0).all()


@pytest.mark.parametrize("position", ["sinusoidal", "tener"])
def test_the_tagger_is_the_transformers_encoder_and_a_dense_layer(position, rng):
    config = tt.TransformerConfig.preset("tiny", vocab_size=VOCAB, position=position)
    model = TransformerTagger(config, num_tags=TAGS)
    translator = tt.Transformer(config)
    translator.source_embedding.set_weights(model.token_embedding.get_weights())
    translator.encoder.set_weights(model.stack.get_weights())
    ids = rng.integers(1, VOCAB, size=(2, 7))
    ids[1, 4:] = 0
    encoded, _ = translator.encode(ids)
    kernel, bias = model.classifier.get_weights()
    expected = ops.convert_to_numpy(encoded) @ kernel + bias
    np.testing.assert_allclose(ops.convert_to_numpy(model(ids)), expected, atol=1e-5)


def test_config_round_trip_and_errors(rng):
    model = tagger(position="tener")
    clone = TransformerTagger.from_config(model.get_config())
    assert clone.model_config == model.model_config and clone.num_tags == TAGS
    clone.set_weights(model.get_weights())
    ids = rng.integers(1, VOCAB, size=(2, 5))
    np.testing.assert_array_equal(ops.convert_to_numpy(clone(ids)), ops.convert_to_numpy(model(ids)))
    with pytest.raises(ValueError, match="num_tags"):
        TransformerTagger(model.model_config, num_tags=1)
    with pytest.raises(TypeError, match="TransformerConfig"):
        TransformerTagger("tiny", num_tags=3)


def test_keras_file_round_trip(tmp_path, rng):
    model = tagger(position="shaw", max_relative_distance=4)
    ids = rng.integers(1, VOCAB, size=(2, 5))
    model.save(tmp_path / "tagger.keras")
    again = keras.models.load_model(tmp_path / "tagger.keras")
    assert isinstance(again, TransformerTagger) and again.num_tags == TAGS
    np.testing.assert_array_equal(ops.convert_to_numpy(again(ids)), ops.convert_to_numpy(model(ids)))


def direction_task(rng, count):
    """Tag 2 on the token right AFTER marker 3, tag 3 on the token right BEFORE it, else 1:
    the same neighbour gets a different tag depending on the side the marker is on."""
    ids = rng.integers(4, VOCAB, size=(count, 10))
    markers = rng.integers(1, 9, size=count)
    ids[np.arange(count), markers] = 3
    tags = np.ones_like(ids)
    tags[np.arange(count), markers + 1] = 2
    tags[np.arange(count), markers - 1] = 3
    return ids.astype("int32"), tags.astype("int32")


@pytest.mark.parametrize("position", ["shaw", "tener"])
def test_relative_tagger_learns_left_from_right(position):
    rng = np.random.default_rng(0)
    model = TransformerTagger(
        tt.TransformerConfig.preset(
            "tiny", vocab_size=VOCAB, position=position, dropout=0.0, d_model=32, num_heads=2,
            d_ff=64, num_encoder_layers=2,
        ),
        num_tags=TAGS,
    )
    ids, tags = direction_task(rng, 2048)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(ids, tags, batch_size=64, epochs=6, verbose=0)
    test_ids, test_tags = direction_task(rng, 256)
    predicted = ops.convert_to_numpy(model.predict_tags(test_ids))
    marked = test_tags > 1
    assert (predicted[marked] == test_tags[marked]).mean() > 0.95


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = serve(text=tf.constant(json.loads(sys.argv[2])))
    print(json.dumps({
        "tokens": [[t.decode() for t in row] for row in out["tokens"].numpy()],
        "tags": [[t.decode() for t in row] for row in out["tags"].numpy()],
        "length": out["length"].numpy().tolist(),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tfx_transformer", "keras_hub")),
    }))
    """
)


@pytest.mark.parametrize("position", ["learned", "tener"])
def test_export_tags_text_in_a_fresh_process_like_python(position, tmp_path):
    from tfx_transformer.export import export_module, read_export_info
    from tfx_transformer.tasks.tagging.serving import TaggingServingModule
    from tfx_transformer.tasks.tagging.data import entities_split
    from tfx_transformer.tasks.tagging.vocabulary import TagVocabulary

    data = entities_split("train", sizes={"train": 300})
    vocabulary = TagVocabulary.build(data)
    config = tt.TransformerConfig.preset(
        "tiny", vocab_size=vocabulary.vocab_size, num_encoder_layers=1, max_length=8, position=position
    )
    model = TransformerTagger(config, num_tags=vocabulary.num_tags)
    version = export_module(TaggingServingModule(model, vocabulary), str(tmp_path / "export"))
    texts = [
        "Anna Morgan joined Acme Inc. in Paris on the fifth of May .",
        "Zyx  <pad>\tLyon",
        "",
        "   ",
    ]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, version, json.dumps(texts)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["loaded"] == []
    width = 13
    assert reply["tokens"][1][:3] == ["Zyx", "<pad>", "Lyon"]  # a word, even if it reads <pad>
    assert all(len(row) == width for row in reply["tokens"] + reply["tags"])
    cut = 8 if position == "learned" else None  # only learned positions stop at max_length
    for text, tags, length in zip(texts, reply["tags"], reply["length"]):
        words = text.split()[:cut]
        expected = []
        if words:
            ids = np.array([vocabulary.encode_words(words)], "int32")
            expected = vocabulary.decode_tags(ops.convert_to_numpy(model.predict_tags(ids))[0])
        assert tags[: len(words)] == expected and length == len(words)
        assert all(tag == "" for tag in tags[len(words) :])
    assert read_export_info(version)["tags"] == vocabulary.tags[1:]
