"""`--task lm`: long text, segment batches, and `python train.py --task lm` end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.training.test_training import TINY, train
from tfx_transformer.data import DataError
from tfx_transformer.tasks.lm.data import counting_split, load_spec, read_text, segment_batches


def test_counting_text_is_deterministic_and_counts():
    text = counting_split("train", seed=1, sizes={"train": 5})
    assert text.lines == counting_split("train", seed=1, sizes={"train": 5}).lines
    assert text.lines != counting_split("test", seed=1, sizes={"test": 5}).lines
    numbers = text.lines[0].rstrip(" .").split(" , ")
    assert 20 <= len(numbers) <= 60
    from num2words import num2words

    start = next(n for n in range(10_000) if num2words(n) == numbers[0])
    assert numbers == [num2words(n) for n in range(start, start + len(numbers))]


def test_text_reader_and_specs(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("first line\n\n  second line  \n", encoding="utf-8")
    assert read_text(str(path)).lines == ["first line", "second line"]
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="only blank lines"):
        read_text(str(tmp_path / "blank.txt"))
    with pytest.raises(DataError, match="builtin:counting or text:PATH"):
        load_spec("conll:x")


def test_segment_batches_align_context_inputs_and_next_tokens():
    stream = np.arange(1, 42, dtype="int32")  # 41 tokens, 40 predictions
    batches, padding = segment_batches(stream, 8, 5, batch_tokens=16)
    rows = [row for batch in batches for row in zip(*batch)]
    assert len(rows) == 5 and all(len(batch) == 3 for batch in batches)
    for context, inputs, labels in rows:
        start = inputs[0] - 1
        real = labels != 0
        np.testing.assert_array_equal(labels[real], inputs[real] + 1)  # the next token
        expected_context = stream[max(0, start - 5) : start]
        np.testing.assert_array_equal(context[5 - len(expected_context) :], expected_context)
        assert (context[: 5 - len(expected_context)] == 0).all()
    assert padding == pytest.approx(0.0)
    vanilla, _ = segment_batches(stream, 8, 0, batch_tokens=16, shuffle_seed=3)
    assert all(len(batch) == 2 for batch in vanilla)
    starts = sorted(int(batch[0][row, 0]) for batch in vanilla for row in range(len(batch[0])))
    assert starts[0] <= 8 and np.all(np.diff(starts) == 8)  # a random offset, then every 8


def write_text(path, lines=120):
    from num2words import num2words

    text = "\n".join(" , ".join(num2words(n) for n in range(s, s + 12)) + " ." for s in range(0, lines * 7, 7))
    path.write_text(text + "\n", encoding="utf-8")
    return path


LM = [*TINY, "--set", "max_length=16", "--eval-examples", "20"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["vanilla", "transformer_xl"])
def test_lm_run_writes_metrics_for_its_mode(mode, tmp_path):
    data = write_text(tmp_path / "book.txt")
    extra = []
    if mode == "transformer_xl":
        extra = ["--set", "position=transformer_xl", "--set", "memory_length=16"]
    output = tmp_path / "out"
    result = train(
        ["--task", "lm", "--output", str(output), "--data", f"text:{data}",
         "--test-data", f"text:{data}", "--steps", "8", *LM, *extra]
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["perplexity"] > 1.0
    procedures = ["per_segment", "sliding_window"] + (["with_memory"] if extra else [])
    for name in procedures:
        assert metrics[f"test_perplexity_{name}"] > 1.0 and metrics[f"test_seconds_{name}"] >= 0
    assert ("test_perplexity_with_memory" in metrics) == bool(extra)
    assert metrics["test_tokens"] == 20 * 16  # --eval-examples segments of max_length tokens
    assert (output / "model.keras").exists() and not (output / "export").exists()
    assert "done: 8 steps" in result.stdout
    config = json.loads((output / "config.json").read_text())
    assert config["options"]["label_smoothing"] == 0.0
    exported = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.export", "--run", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert exported.returncode == 2 and "has no serving export" in exported.stderr


@pytest.mark.slow
def test_a_memory_with_absolute_positions_is_refused_before_anything_is_written(tmp_path):
    data = write_text(tmp_path / "book.txt", lines=10)
    result = train(
        ["--task", "lm", "--output", str(tmp_path / "out"), "--data", f"text:{data}",
         "--set", "memory_length=8", *TINY],
        check=False,
    )
    assert result.returncode == 2 and "relative positions" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
