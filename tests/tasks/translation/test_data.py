import re

import numpy as np
import pytest

from tfx_transformer.data import DataError, split_off
from tfx_transformer.tasks.translation import data as data_lib
from tfx_transformer.tasks.translation.prepare import input_files
from tfx_transformer.tokens import END_ID, START_ID


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def test_tsv_reads_pairs_and_counts_empty_ones(tmp_path):
    path = write(tmp_path / "d.tsv", "one\tun\n\ntwo\t\n\tzero\nthree\ttrois\n")
    data = data_lib.read_tsv(path)
    assert data.sources == ["one", "three"] and data.targets == ["un", "trois"]
    assert data.skipped_empty == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("one\tun\ntwo deux\n", r"d\.tsv:2: no tab"),
        (b"one\tun\nt\xffo\tdeux\n", r"d\.tsv:2: invalid UTF-8"),
        ("", r"d\.tsv: the file is empty"),
        ("a\tb\tc\n", r"d\.tsv:1: more than one tab \(3 columns\).*cut -f1,2 .*d\.tsv"),
        ("\t\n \t \n", r"no usable pairs"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "d.tsv", content)
    with pytest.raises(DataError, match=message):
        data_lib.read_tsv(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        data_lib.load_spec(f"tsv:{tmp_path}/nope.tsv")


def test_parallel_files(tmp_path):
    src = write(tmp_path / "s.txt", "one\ntwo\n\n")
    tgt = write(tmp_path / "t.txt", "un\ndeux\nvide\n")
    data = data_lib.load_spec(f"parallel:{src},{tgt}")
    assert data.sources == ["one", "two"] and data.skipped_empty == 1


def test_parallel_paths_may_hold_commas(tmp_path, monkeypatch):
    folder = tmp_path / "corpus, cleaned"
    folder.mkdir()
    src = write(folder / "s,1.txt", "one\n")
    tgt = write(folder / "t.txt", "un\n")
    data = data_lib.load_spec(f"parallel:{src},{tgt}")
    assert (data.sources, data.targets) == (["one"], ["un"])
    assert input_files(f"parallel:{src},{tgt}") == (str(src), str(tgt))
    # Where two commas each split the spec into existing files, neither is guessed.
    for name in ("a", "b,c", "a,b", "c"):
        write(tmp_path / name, "x\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="in 2 ways; rename"):
        data_lib.load_spec("parallel:a,b,c")
    with pytest.raises(DataError, match="no comma splits it into two existing files"):
        data_lib.load_spec("parallel:n,o,p")
    for spec in ("parallel:,", "parallel:c,", "parallel:,c"):
        with pytest.raises(DataError, match="give a source and a target path"):
            data_lib.load_spec(spec)
    # One comma and a missing file: the error names the file.
    with pytest.raises(DataError, match="nope.txt: no such file"):
        data_lib.load_spec(f"parallel:{src},{tmp_path}/nope.txt")


def test_parallel_files_of_different_lengths(tmp_path):
    src = write(tmp_path / "s.txt", "one\ntwo\n")
    tgt = write(tmp_path / "t.txt", "un\n")
    with pytest.raises(DataError, match="s.txt has 2 lines but .*t.txt has 1"):
        data_lib.read_parallel(src, tgt)


def test_parallel_invalid_utf8_names_the_line(tmp_path):
    src = write(tmp_path / "s.txt", "one\ntwo\n")
    tgt = write(tmp_path / "t.txt", b"un\n\xc3\x28\n")
    with pytest.raises(DataError, match=r"t\.txt:2: invalid UTF-8"):
        data_lib.read_parallel(src, tgt)


def test_unknown_specs_are_refused():
    with pytest.raises(DataError, match="Unknown data spec"):
        data_lib.load_spec("csv:x")
    with pytest.raises(DataError, match="language pair"):
        data_lib.load_spec("builtin:numbers:en-xx")


def test_builtin_numbers_are_deterministic_and_disjoint(monkeypatch):
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", "")  # the generator itself, not a cached copy
    sizes = {"train": 5000, "validation": 100, "test": 200}
    splits = {s: data_lib.numbers_split(s, sizes=sizes) for s in sizes}
    again = data_lib.numbers_split("test", sizes=sizes)
    assert again.sources == splits["test"].sources
    assert len(splits["train"]) == 5000 and len(splits["test"]) == 200
    assert splits["train"].sources.count("one") == 10  # small numbers come several times
    assert splits["train"].sources.count("one hundred and one") == 3
    assert len(set(splits["train"].sources)) > 900
    assert not set(splits["train"].sources) & set(splits["test"].sources)
    assert not set(splits["train"].sources) & set(splits["validation"].sources)
    assert not set(splits["validation"].sources) & set(splits["test"].sources)
    assert data_lib.number_words(70071) == (
        "seventy thousand and seventy-one", "soixante-dix mille soixante et onze"
    )
    other_seed = data_lib.numbers_split("test", seed=1, sizes=sizes)
    assert other_seed.sources != splits["test"].sources
    german = data_lib.numbers_split("test", "en-de", sizes=sizes)
    assert german.sources == splits["test"].sources and german.targets != splits["test"].targets


SMALL_SIZES = {"train": 300, "validation": 20, "test": 30}


def test_builtin_numbers_are_made_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", "")
    made = {s: data_lib.numbers_split(s, sizes=SMALL_SIZES) for s in SMALL_SIZES}
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", str(tmp_path))
    first = {s: data_lib.numbers_split(s, sizes=SMALL_SIZES) for s in SMALL_SIZES}
    assert len(list((tmp_path / "builtin").iterdir())) == 3

    def no_generation(*args):
        raise AssertionError("the cached split was generated again")

    monkeypatch.setattr(data_lib, "number_words", no_generation)
    for split in SMALL_SIZES:
        cached = data_lib.numbers_split(split, sizes=SMALL_SIZES)
        assert (cached.sources, cached.targets) == (made[split].sources, made[split].targets)
        assert (first[split].sources, first[split].targets) == (cached.sources, cached.targets)
    # Other sizes (they move the held-out numbers too) and another seed are other files.
    with pytest.raises(AssertionError, match="generated again"):
        data_lib.numbers_split("train", sizes={**SMALL_SIZES, "test": 31})
    with pytest.raises(AssertionError, match="generated again"):
        data_lib.numbers_split("test", seed=1, sizes=SMALL_SIZES)
    # A changed generator (module digest) does not read what the old one made.
    monkeypatch.setattr(data_lib, "_module_digest", lambda: b"another version")
    with pytest.raises(AssertionError, match="generated again"):
        data_lib.numbers_split("test", sizes=SMALL_SIZES)


def test_a_damaged_or_unwritable_cache_is_passed_by(tmp_path, monkeypatch):
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", "")
    expected = data_lib.numbers_split("validation", sizes=SMALL_SIZES)
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", str(tmp_path))
    data_lib.numbers_split("validation", sizes=SMALL_SIZES)
    (cached,) = (tmp_path / "builtin").iterdir()
    for damage in ('{"sources": ["one"]', '{"sources": 1, "targets": 2}', "[]",
                   '{"sources": ["one"], "targets": []}'):
        cached.write_text(damage, encoding="utf-8")
        again = data_lib.numbers_split("validation", sizes=SMALL_SIZES)
        assert (again.sources, again.targets) == (expected.sources, expected.targets)
        assert data_lib.read_json(cached)["targets"] == expected.targets  # made again, whole
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("TFX_TRANSFORMER_CACHE", str(blocked))
    again = data_lib.numbers_split("validation", sizes=SMALL_SIZES)
    assert (again.sources, again.targets) == (expected.sources, expected.targets)


class FakeTokenizer:
    """One id per character, offset past the special ids."""

    def encode(self, texts):
        return [[4 + ord(c) % 50 for c in text] for text in texts]


def test_encode_pairs_drops_or_truncates_long_pairs():
    data = data_lib.ParallelText(["ab", "abcdefgh"], ["x", "xy"])
    dropped = data_lib.encode_pairs(FakeTokenizer(), data, max_length=5)
    assert dropped.dropped == 1 and len(dropped.sources) == 1
    assert dropped.sources[0][-1] == END_ID
    truncated = data_lib.encode_pairs(FakeTokenizer(), data, max_length=5, long_pairs="truncate")
    assert truncated.truncated == 1 and len(truncated.sources[1]) == 5
    assert truncated.sources[1][-1] == END_ID


def test_batches_respect_the_token_budget_and_shift_targets(rng):
    lengths = rng.integers(1, 40, size=500)
    data = data_lib.ParallelText(["a" * n for n in lengths], ["b" * (n // 2 + 1) for n in lengths])
    encoded = data_lib.encode_pairs(FakeTokenizer(), data, max_length=64)
    batches, padding = data_lib.make_batches(encoded, batch_tokens=256, max_length=64, shuffle_seed=3)
    seen = 0
    for source, decoder_in, labels in batches:
        bound = max(source.shape[1], labels.shape[1])
        assert source.shape[0] * min(bound, 64) <= max(256, bound)
        assert np.all(decoder_in[:, 0] == START_ID)
        real = labels != 0
        # decoder input is the labels shifted right by one, behind the start token
        np.testing.assert_array_equal(decoder_in[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])
        seen += source.shape[0]
    assert seen == 500
    assert 0.0 < padding < 0.25
    again, _ = data_lib.make_batches(encoded, batch_tokens=256, max_length=64, shuffle_seed=3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    other, _ = data_lib.make_batches(encoded, batch_tokens=256, max_length=64, shuffle_seed=4)
    assert len(other) == len(batches)


def test_split_off_holds_out_pairs():
    data = data_lib.ParallelText([str(i) for i in range(100)], [str(i) for i in range(100)])
    train, valid = split_off(data, 10)
    assert len(train) == 90 and len(valid) == 10
    assert not set(train.sources) & set(valid.sources)


def test_tfds_spec_reads_a_local_dataset(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from num2words import num2words

    class TinyNumberWords(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            text = tfds.features.Text()
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"en": text, "fr": text}),
                supervised_keys=("en", "fr"),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(0, 60),
                "validation": self._generate_examples(60, 70),
            }

        def _generate_examples(self, low, high):
            for n in range(low, high):
                yield n, {"en": num2words(n), "fr": num2words(n, lang="fr") if n != 5 else ""}

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    train = data_lib.load_spec("tfds:tiny_number_words", "train")
    assert len(train) == 59 and train.skipped_empty == 1
    assert ("twenty-one", "vingt et un") in set(zip(train.sources, train.targets))
    valid = data_lib.load_spec("tfds:tiny_number_words", "validation")
    assert valid.sources[0] in {num2words(n) for n in range(60, 70)}
    with pytest.raises(DataError, match="tfds:no_such_dataset_here") as refused:
        data_lib.load_spec("tfds:no_such_dataset_here")
    assert len(str(refused.value)) < 500 and "\n" not in str(refused.value)  # not tfds's list of names


def test_algorithmic_splits_hold_longer_inputs_for_the_test():
    from tfx_transformer.tasks.translation.data import algorithmic_split

    for name in ("copy", "reverse", "addition"):
        train = algorithmic_split(name, "train", sizes={"train": 400})
        test = algorithmic_split(name, "test", sizes={"test": 60})
        train_lengths = [len(s.split()) for s in train.sources]
        assert max(train_lengths) <= 20 and min(train_lengths) >= 1
        assert set(train.bands) == {"1-20"}
        for source, band in zip(test.sources, test.bands):
            low, high = map(int, band.split("-"))
            assert low <= len(source.split()) <= high
        assert test.bands.count("21-40") == test.bands.count("41-60") == 30
        # The same seed gives the same pairs; the splits differ.
        assert algorithmic_split(name, "train", sizes={"train": 400}).sources == train.sources
        assert algorithmic_split(name, "validation", sizes={"validation": 400}).sources != train.sources


def test_algorithmic_targets_are_what_the_task_computes():
    from tfx_transformer.tasks.translation.data import algorithmic_split

    copy = algorithmic_split("copy", "validation", sizes={"validation": 50})
    assert copy.sources == copy.targets
    reverse = algorithmic_split("reverse", "validation", sizes={"validation": 50})
    assert all(t.split() == s.split()[::-1] for s, t in zip(reverse.sources, reverse.targets))
    addition = algorithmic_split("addition", "test", sizes={"test": 50})
    for source, target in zip(addition.sources, addition.targets):
        first, second = source.split(" + ")
        def value(digits):  # least significant digit first
            return int("".join(digits.split()[::-1]))
        assert value(target) == value(first) + value(second)


def test_algorithmic_spec_errors_name_the_choices():
    with pytest.raises(DataError, match="copy, reverse, addition"):
        data_lib.load_spec("builtin:algorithmic:sort")
    with pytest.raises(DataError, match=re.escape("'algorithmic:copy|reverse|addition'")):
        data_lib.load_spec("builtin:nonsense")
