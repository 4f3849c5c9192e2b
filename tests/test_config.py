import json

import pytest

from tfx_transformer import PRESETS, Transformer, TransformerConfig


def test_json_round_trip_keeps_every_field():
    config = TransformerConfig.preset("small", vocab_size=123, position="learned", norm_first=True)
    again = TransformerConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["vocab_size"] == 123


def test_the_feed_forward_dropout_reaches_every_block_of_every_stack():
    for overrides, count in (({}, 4), ({"universal_steps": 2}, 2)):  # 2 + 2 blocks, or 1 + 1
        config = TransformerConfig.preset("tiny", vocab_size=40, ffn_dropout=0.0, **overrides)
        model = Transformer(config)
        blocks = [layer for layer in model._flatten_layers() if hasattr(layer, "feed_forward")]
        assert len(blocks) == count and all(b.ffn_dropout == 0.0 and b.feed_forward.dropout == 0.0 for b in blocks)
        assert all(b.self_attention.dropout == config.dropout for b in blocks)


def test_defaults_are_the_paper_base_model():
    config = TransformerConfig()
    assert (config.d_model, config.num_heads, config.d_ff) == (512, 8, 2048)
    assert (config.num_encoder_layers, config.num_decoder_layers, config.dropout) == (6, 6, 0.1)
    assert TransformerConfig.preset("big").dropout == 0.3


@pytest.mark.parametrize(
    "preset, paper_millions", [("base", 65.0), ("big", 213.0)]
)
def test_parameter_counts_are_within_5_percent_of_the_paper(preset, paper_millions):
    model = Transformer(TransformerConfig.preset(preset, vocab_size=37000))
    assert abs(model.count_params() / 1e6 - paper_millions) / paper_millions < 0.05


def test_base_parameter_count_by_hand():
    d, ff, v, n = 512, 2048, 37000, 6
    attention = 4 * (d * d + d)
    feed_forward = d * ff + ff + ff * d + d
    encoder_layer = attention + feed_forward + 2 * 2 * d
    decoder_layer = 2 * attention + feed_forward + 3 * 2 * d
    expected = v * d + n * encoder_layer + n * decoder_layer
    assert Transformer(TransformerConfig.preset("base", vocab_size=v)).count_params() == expected


def test_every_preset_builds():
    assert set(PRESETS) == {"tiny", "small", "base", "big"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d_model": 100, "num_heads": 8}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"ffn_dropout": 1.0}, "ffn_dropout"),
        ({"position": "rotary"}, "position"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"end_id": 50, "vocab_size": 10}, "end_id"),
        ({"pad_id": 1}, "padding"),
    ],
)
def test_invalid_configs_are_refused_with_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**overrides)


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(ValueError, match="colour"):
        TransformerConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="huge"):
        TransformerConfig.preset("huge")
