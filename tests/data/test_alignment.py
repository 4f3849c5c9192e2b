"""The misaligned-corpus check: aligned text passes, a lost line is found where it was lost."""

import numpy as np
import pytest

from tests import MULTI30K
from tfx_transformer.data.alignment import find_misalignment
from tfx_transformer.data import DataError
from tfx_transformer.tasks.translation.data import read_parallel, read_tsv

WORDS = "the a dog cat runs on green grass near white fence man woman child plays ball".split()


def corpus(count=600, seed=0):
    """Sentences of 2-30 words and 'translations' whose length follows theirs, with noise."""
    rng = np.random.default_rng(seed)
    sources, targets = [], []
    for _ in range(count):
        length = int(rng.integers(2, 31))
        sources.append(" ".join(rng.choice(WORDS, length)))
        noisy = max(1, int(round(length * 1.15 + rng.normal(0, 1.0))))
        targets.append(" ".join(rng.choice(WORDS, noisy)))
    return sources, targets


def test_aligned_text_passes():
    for seed in range(5):
        assert find_misalignment(*corpus(seed=seed)) is None


@pytest.mark.parametrize("lost", [40, 300, 560])
def test_a_lost_target_line_is_found_where_it_was_lost(lost):
    sources, targets = corpus()
    del targets[lost]
    found = find_misalignment(sources, targets)
    assert found is not None and found.shift == -1
    assert abs(found.first_line - (lost + 1)) <= 2  # 1-based lines


def test_a_lost_source_line_is_found_too():
    sources, targets = corpus()
    del sources[200]
    found = find_misalignment(sources, targets)
    assert found is not None and found.shift == 1 and abs(found.first_line - 201) <= 2
    assert "a line of the sources is missing" not in found.describe("a.en", "a.fr")
    assert "a line of a.en is missing near line" in found.describe("a.en", "a.fr")


def test_too_few_pairs_to_tell():
    sources, targets = corpus(30)
    assert find_misalignment(sources, targets[1:] + targets[:1]) is None


def test_parallel_files_of_different_lengths_name_the_first_shifted_line(tmp_path):
    sources, targets = corpus()
    del targets[250]
    (tmp_path / "a.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "a.fr").write_text("\n".join(targets) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"600 lines but .* 599.*misaligned from line 25[0-3].*"
                                        r"--allow-misaligned to train on the first 599"):
        read_parallel(str(tmp_path / "a.en"), str(tmp_path / "a.fr"))
    allowed = read_parallel(str(tmp_path / "a.en"), str(tmp_path / "a.fr"), allow_misaligned=True)
    assert len(allowed) == 599 and "600 lines but" in allowed.misalignment


def test_equal_lengths_but_shifted_text_is_flagged(tmp_path):
    sources, targets = corpus()
    targets = targets[:100] + targets[101:] + ["one more line at the end"]
    (tmp_path / "a.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "a.fr").write_text("\n".join(targets) + "\n", encoding="utf-8")
    text = read_parallel(str(tmp_path / "a.en"), str(tmp_path / "a.fr"))
    assert text.misalignment and "from line 10" in text.misalignment
    tsv = tmp_path / "a.tsv"
    tsv.write_text("\n".join(f"{s}\t{t}" for s, t in zip(sources, targets)) + "\n", encoding="utf-8")
    assert read_tsv(str(tsv)).misalignment
    aligned = corpus()
    tsv.write_text("\n".join(f"{s}\t{t}" for s, t in zip(*aligned)) + "\n", encoding="utf-8")
    assert read_tsv(str(tsv)).misalignment is None


@pytest.mark.skipif(not MULTI30K.exists(), reason=f"the shared corpus is not at {MULTI30K}")
@pytest.mark.parametrize("split", ["train", "val", "test_2016_flickr"])
def test_the_shared_real_corpus_passes_and_a_lost_line_in_it_is_found(split):
    text = read_parallel(str(MULTI30K / f"{split}.en"), str(MULTI30K / f"{split}.fr"))
    assert text.misalignment is None
    lost = len(text) // 2
    found = find_misalignment(text.sources, text.targets[:lost] + text.targets[lost + 1:])
    assert found is not None and abs(found.first_line - (lost + 1)) <= 2
