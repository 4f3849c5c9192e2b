"""The CTranslate2 export decodes as the package's own decoder does."""

import os

import pytest

from tfx_transformer.export.__main__ import main as export_main

ctranslate2 = pytest.importorskip("ctranslate2", reason="the ctranslate2 extra is not installed")

from tfx_transformer import TransformerConfig, Transformer  # noqa: E402
from tfx_transformer.export.ctranslate2 import export_ctranslate2, load_translator  # noqa: E402
from tfx_transformer.tasks.translation.translator import Translator  # noqa: E402

TEXTS = ["seventy-one", "two hundred and forty-three", "one", "ninety-nine", "twelve", "fifty-five"]


def ctranslate2_greedy(translator, tokenizer, texts, max_length):
    pieces = [[tokenizer.id_to_piece(i) for i in ids] for ids in tokenizer.encode(texts)]
    results = translator.translate_batch(
        pieces, beam_size=1, max_decoding_length=max_length,
        # The package's decoder never produces padding or the start token, and may end at once
        # (CTranslate2's default min_decoding_length is 1).
        suppress_sequences=[["<pad>"], ["<s>"]], min_decoding_length=0,
    )
    return [tokenizer._processor.decode_pieces(r.hypotheses[0]) for r in results]


@pytest.mark.parametrize("overrides", [{}, {"norm_first": True}, {"position": "learned", "share_embeddings": False}])
def test_greedy_translations_are_identical(exported_run, tmp_path, overrides):
    import keras

    model, tokenizer = exported_run["model"], exported_run["tokenizer"]
    if overrides:  # another architecture, random weights: every token is a possible output
        keras.utils.set_random_seed(3)
        config = TransformerConfig.from_dict({**model.model_config.to_dict(), **overrides})
        model = Transformer(config)
    path = export_ctranslate2(model, tokenizer, str(tmp_path / "ct2"))
    # CTranslate2 cuts a translation at max_decoding_length only: so does ours here.
    ours = Translator(model, tokenizer, beam_size=1, max_length=12, max_length_factor=None).translate(TEXTS)
    theirs = ctranslate2_greedy(load_translator(path), tokenizer, TEXTS, 12)
    assert theirs == ours


def test_what_ctranslate2_cannot_express_is_refused(exported_run, tmp_path):
    config = TransformerConfig.from_dict({**exported_run["model"].model_config.to_dict(), "position": "shaw"})
    with pytest.raises(ValueError, match="no counterpart for position='shaw'"):
        export_ctranslate2(Transformer(config), exported_run["tokenizer"], str(tmp_path / "ct2"))
    config = TransformerConfig.from_dict(
        {**exported_run["model"].model_config.to_dict(), "universal_steps": 3}
    )
    with pytest.raises(ValueError, match="Universal Transformer"):
        export_ctranslate2(Transformer(config), exported_run["tokenizer"], str(tmp_path / "ct2"))
    assert not (tmp_path / "ct2").exists()


def test_export_command_writes_a_ctranslate2_version(exported_run, capsys):
    assert export_main(["--run", str(exported_run["run"]), "--format", "ctranslate2",
                        "--quantization", "int8"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(os.path.join("ctranslate2", "1")) and os.path.exists(os.path.join(path, "model.bin"))
    translator = load_translator(path, compute_type="int8")
    assert len(ctranslate2_greedy(translator, exported_run["tokenizer"], TEXTS, 12)) == len(TEXTS)
