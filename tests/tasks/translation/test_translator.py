"""`Translator` (compiled decoding of lists of strings) and `python -m tfx_transformer.translate`."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from tests import ROOT
from tfx_transformer import decoding, translate
from tfx_transformer.tasks.translation.translator import InputTooLong, Translator
from tfx_transformer.tokens import END_ID

TEXTS = ["seventy-one", "two hundred and forty-three thousand and six", "one", "", "ninety-nine"]


@pytest.fixture(scope="module")
def translator(exported_run):
    return Translator.from_run(str(exported_run["run"]), beam_size=3, max_length=12, batch_size=2)


def encoded(translator, texts):
    return [ids[: translator.max_input_length - 1] + [END_ID] for ids in translator.tokenizer.encode(texts)]


def test_translations_equal_decoding_each_text_alone_in_the_input_order(translator):
    results = translator.translate_with_scores(TEXTS)
    for text, (translation, score) in zip(TEXTS, results):
        source = np.array([encoded(translator, [text])[0]], "int32")
        tokens, scores = decoding.beam_search(
            translator.model, source, beam_size=3, max_length=12,
            max_length_factor=translator.max_length_factor,
        )
        assert translation == translator.tokenizer.decode(ops.convert_to_numpy(tokens))[0]
        assert score == pytest.approx(float(scores[0]), abs=1e-4)
    assert translator.translate(TEXTS) == [t for t, _ in results]


def test_nbest_sample_and_score_modes(translator):
    best = translator.translate_with_scores(TEXTS)
    nbest = translator.nbest(TEXTS, 3)
    for (translation, score), hypotheses in zip(best, nbest):
        assert len(hypotheses) == 3 and hypotheses[0] == (translation, pytest.approx(score, abs=1e-4))
        assert [s for _, s in hypotheses] == sorted((s for _, s in hypotheses), reverse=True)
    assert translator.sample(TEXTS, top_p=0.9, seed=1) == translator.sample(TEXTS, top_p=0.9, seed=1)
    greedy = Translator(translator.model, translator.tokenizer, beam_size=1, max_length=12)
    assert [t for t, _ in greedy.sample(TEXTS, top_k=1, seed=3)] == greedy.translate(TEXTS)
    targets = ["soixante et onze", "un", "", "deux", "quatre-vingt-dix-neuf"]
    scored = translator.score(TEXTS, targets)
    source = np.array(pad(encoded(translator, TEXTS)), "int32")
    target = np.array(pad(encoded(translator, targets)), "int32")
    per_token, totals = decoding.score_targets(translator.model, source, target)
    for row, (total, tokens) in enumerate(scored):
        assert total == pytest.approx(float(totals[row]), abs=1e-4) == pytest.approx(sum(tokens), abs=1e-4)
        assert len(tokens) == len(encoded(translator, [targets[row]])[0])


def pad(rows):
    width = max(map(len, rows))
    return [row + [0] * (width - len(row)) for row in rows]


def test_a_run_of_another_task_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"options": {"task": "tagging"}}')
    with pytest.raises(ValueError, match="--task tagging run"):
        Translator.from_run(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train first"):
        Translator.from_run(str(tmp_path / "nothing"))


def test_long_inputs_are_cut_or_refused(translator):
    long_text = "seventy " * 100
    assert len(translator.translate([long_text, "one"])) == 2
    refusing = Translator(translator.model, translator.tokenizer, long_inputs="refuse")
    with pytest.raises(InputTooLong, match="input 2 has"):
        refusing.translate(["one", long_text])
    (index, tokens), = translator.too_long(["one", long_text])
    assert index == 1 and tokens == len(translator.tokenizer.encode([long_text])[0]) + 1
    assert tokens > translator.max_input_length
    fitting = "seventy " * 10
    assert translator.too_long([fitting]) == []


def write(path, content):
    path.write_bytes(content)
    return str(path)


def test_translate_command_files_nbest_score_and_bad_lines(exported_run, translator, tmp_path, capsys):
    run = str(exported_run["run"])
    source = write(tmp_path / "in.txt", "\n".join(TEXTS).encode() + b"\n")
    output = tmp_path / "out.txt"
    common = ["--run", run, "--beam-size", "3", "--max-length", "12"]
    assert translate.main([*common, "--input", source, "--output", str(output)]) == 0
    assert output.read_text().splitlines() == translator.translate(TEXTS)
    assert translate.main([*common, "--input", source, "--nbest", "2", "--with-scores"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(TEXTS) and all("\t" in line for line in lines)
    targets = write(tmp_path / "targets.txt", "\n".join(["un"] * len(TEXTS)).encode() + b"\n")
    assert translate.main([*common, "--input", source, "--score", targets]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == ["un"] * len(TEXTS)

    bad = write(tmp_path / "bad.txt", b"one\n\xff\xfe two\nthree\n")
    assert translate.main([*common, "--input", bad, "--output", str(tmp_path / "never.txt")]) == 2
    assert "bad.txt:2: invalid UTF-8" in capsys.readouterr().err
    long_line = write(tmp_path / "long.txt", b"one\ntwo\n" + b"seventy " * 100 + b"\n")
    assert translate.main([*common, "--input", long_line, "--long-lines", "refuse"]) == 2
    assert "long.txt:3: input 3 has" in capsys.readouterr().err
    assert not (tmp_path / "never.txt").exists()
    assert translate.main([*common, "--input", long_line]) == 0  # cut, and said so
    cut = capsys.readouterr()
    assert len(cut.out.splitlines()) == 3
    assert "1 line(s) of" in cut.err and "long.txt have more than" in cut.err and "(lines 3)" in cut.err
    assert translate.main([*common, "--input", source]) == 0
    assert "warning" not in capsys.readouterr().err


def test_stdin_loses_a_byte_order_mark_as_files_do(monkeypatch):
    raw = ("\ufeff" + "one\r\ntwo \ufeff\n").encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert translate.read_text("-") == ["one", "two \ufeff"]


@pytest.mark.slow
def test_translate_command_reads_stdin_and_writes_stdout(exported_run, translator):
    result = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.translate", "--run", str(exported_run["run"]),
         "--beam-size", "3", "--max-length", "12"],
        input="\n".join(TEXTS) + "\n", capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == translator.translate(TEXTS)
