"""BLEU counts the words of each target language: sacrebleu's tokenizer is chosen by the script
of the references, so that text written without spaces is not one word a sentence."""

import json

import pytest

from tfx_transformer.runs import RunPaths
from tfx_transformer.tasks.translation.metrics import (
    bleu_tokenizer,
    score_translations,
    tokenizer_available,
)
from tfx_transformer.tasks.translation.task import TranslationTask
from tfx_transformer.training.options import TrainOptions

CHINESE = ["我们今天去公园散步。", "他喜欢读书和写字。", "这是一个很好的例子。"]
CHINESE_HYPOTHESES = ["我们今天去公园走路。", "他喜欢读书和画画。", "这是一个很好的例子。"]
JAPANESE = ["今日は公園に行きました。", "私は本を読むのが好きです。"]
THAI = ["ฉันชอบกินข้าวผัด", "วันนี้อากาศดีมาก"]
KOREAN = ["나는 오늘 공원에 갔다.", "그는 책 읽기를 좋아한다."]
SPACED = {
    "english": ["A man in a blue shirt is standing on a ladder."],
    "french": ["Un homme en chemise bleue se tient sur une échelle."],
    "russian": ["Мужчина в синей рубашке стоит на лестнице."],
    "arabic": ["رجل يرتدي قميصا أزرق يقف على سلم."],
    "hindi": ["नीली कमीज़ पहने एक आदमी सीढ़ी पर खड़ा है।"],
    "english with a Chinese name": ["Mr 王 said the meeting in Beijing was a success."],
}


def test_the_tokenizer_follows_the_script_of_the_references():
    assert bleu_tokenizer(CHINESE) == "zh"
    assert bleu_tokenizer(JAPANESE) == ("ja-mecab" if tokenizer_available("ja-mecab") else "char")
    assert bleu_tokenizer(THAI) == "char"
    assert bleu_tokenizer(KOREAN) == ("ko-mecab" if tokenizer_available("ko-mecab") else "13a")
    for language, text in SPACED.items():
        assert bleu_tokenizer(text) == "13a", language
    assert bleu_tokenizer([]) == "13a"
    assert bleu_tokenizer(["", "123 456"]) == "13a"  # no letters at all


def test_unspaced_text_gets_a_bleu_that_counts_its_words():
    """With 13a, each Chinese sentence is one word: two near misses score 0; with auto, the
    characters are the words, as sacrebleu -l en-zh counts them."""
    spaced = score_translations(CHINESE_HYPOTHESES, CHINESE, tokenize="13a")
    assert spaced["bleu"] == 0.0 and spaced["length_ratio"] == 1.0
    chosen = score_translations(CHINESE_HYPOTHESES, CHINESE)
    assert chosen == score_translations(CHINESE_HYPOTHESES, CHINESE, tokenize="zh")
    assert 60 < chosen["bleu"] < 90
    assert chosen["chrf"] == spaced["chrf"]  # chrF counts characters either way
    assert chosen["exact_match"] == pytest.approx(1 / 3)
    # A shorter translation: the brevity penalty counts characters too.
    short = score_translations([CHINESE[0][:5], *CHINESE[1:]], CHINESE)
    assert short["length_ratio"] == pytest.approx(24 / 29) and short["brevity_penalty"] < 1


def test_an_unknown_or_unusable_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="BLEU tokenizer must be one of .*Received: 'spaces'"):
        score_translations(CHINESE, CHINESE, tokenize="spaces")
    with pytest.raises(ValueError, match="--bleu-tokenize must be one of"):
        TrainOptions(bleu_tokenize="spaces")
    if not tokenizer_available("ja-mecab"):
        with pytest.raises(ValueError, match="'ja-mecab': Japanese tokenization requires extra"):
            score_translations(JAPANESE, JAPANESE, tokenize="ja-mecab")


def english_japanese_numbers(folder, count, offset):
    from num2words import num2words

    lines = [f"{num2words(n)}\t{num2words(n, lang='ja')}" for n in range(offset, offset + count)]
    path = folder / f"numbers-{offset}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"tsv:{path}"


def test_a_translation_run_scores_and_records_bleu_with_its_targets_tokenizer(tmp_path):
    """English number words to Japanese numerals (Han characters, no spaces): the run picks
    zh, scores its evaluations with it, and says so in metrics.json's statistics; an explicit
    --bleu-tokenize is kept."""
    data = english_japanese_numbers(tmp_path, 300, 1000)
    valid = english_japanese_numbers(tmp_path, 40, 5000)
    options = TrainOptions(output=str(tmp_path / "run"), data=data, valid_data=valid,
                           batch_tokens=256, vocab_size=200, eval_examples=40,
                           model={"d_model": 32, "d_ff": 64, "num_heads": 2})
    task = TranslationTask(options, RunPaths(options.output))
    task.prepare()
    assert task.bleu_tokenize == "zh"
    assert json.loads(json.dumps(task.data_statistics())) == {"bleu_tokenize": "zh"}
    references = task.eval_texts[1]
    near_misses = [reference[:-1] + "零" for reference in references]  # the last numeral wrong
    task._translate = lambda model, sources, beam_size: near_misses
    scores = task.evaluate(model=None)
    assert scores == score_translations(near_misses, references, tokenize="zh")
    assert scores["bleu"] > 50 and scores["exact_match"] == 0.0
    assert score_translations(near_misses, references, tokenize="13a")["bleu"] == 0.0

    explicit = TrainOptions(**{**options.to_dict(), "bleu_tokenize": "char",
                               "output": str(tmp_path / "explicit")})
    task = TranslationTask(explicit, RunPaths(explicit.output))
    task.prepare()
    assert task.bleu_tokenize == "char"


def test_a_run_saved_before_bleu_tokenize_existed_resumes(tmp_path):
    """Its config.json has no "bleu_tokenize": it counts as the default, not as a change."""
    from tfx_transformer.training.resume import check_output_folder

    output = tmp_path / "run"
    output.mkdir()
    saved = TrainOptions(output=str(output)).to_dict()
    del saved["bleu_tokenize"]
    (output / "config.json").write_text(json.dumps({"options": saved, "model": {}, "packed": False}))
    check_output_folder(TrainOptions(output=str(output), resume=True), RunPaths(str(output)))
    with pytest.raises(ValueError, match="bleu_tokenize: saved 'auto', now 'zh'"):
        check_output_folder(TrainOptions(output=str(output), resume=True, bleu_tokenize="zh"),
                            RunPaths(str(output)))
