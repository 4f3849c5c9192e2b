"""Tagged text: the CoNLL reader, the built-in entity set, vocabularies and batches; entity F1."""

import numpy as np
import pytest

from tfx_transformer.data import DataError
from tfx_transformer.tasks.tagging.data import (
    TaggedText,
    encode_tagged,
    entities_split,
    load_spec,
    make_batches,
    read_conll,
)
from tfx_transformer.tasks.tagging.metrics import entity_scores, entity_spans
from tfx_transformer.tasks.tagging.vocabulary import TagVocabulary
from tfx_transformer.tokens import PAD_ID, UNK_ID

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


BRUSSELS NNP B-NP B-LOC
"""


def test_conll_reader_takes_the_first_and_last_columns(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    data = read_conll(str(path))
    assert data.tokens == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert data.tags == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert load_spec(f"conll:{path}").tags == data.tags


@pytest.mark.parametrize(
    "text, message",
    [
        ("EU B-ORG\nrejects\n", ":2: expected a token and its tag"),
        ("EU B-ORG\nrejects X-VERB\n", ":2: the tag 'X-VERB' is not O or B-/I-/E-/S-"),
        ("\n\n-DOCSTART- O\n", "no tagged sentences"),
        ("", "the file is empty"),
    ],
)
def test_conll_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("(", r"\(")) as error:
        read_conll(str(path))
    assert str(path) in str(error.value)


def test_unknown_tagging_specs_are_refused():
    with pytest.raises(DataError, match="builtin:entities or conll:PATH"):
        load_spec("tsv:x.tsv")
    with pytest.raises(DataError, match="'entities'"):
        load_spec("builtin:numbers")


def test_builtin_entities_are_deterministic_bio_and_hold_unseen_names_out():
    train = entities_split("train", seed=3, sizes={"train": 2000})
    again = entities_split("train", seed=3, sizes={"train": 2000})
    assert train.tokens == again.tokens and train.tags == again.tags
    test = entities_split("test", seed=3)
    assert len(test) == 1000
    for tokens, tags in zip(train.tokens + test.tokens, train.tags + test.tags):
        assert len(tokens) == len(tags)
        for previous, tag in zip(["O"] + tags, tags):  # BIO: an I- continues its own type
            assert tag == "O" or tag.startswith("B-") or previous[2:] == tag[2:]
    seen = {w for sentence in train.tokens for w in sentence}
    unseen = {w for sentence in test.tokens for w in sentence} - seen
    assert unseen, "validation and test need names the model has never seen"
    # Ambiguous words take both tags, decided by context.
    paris = {tag for s, t in zip(train.tokens, train.tags) for w, tag in zip(s, t) if w == "Paris"}
    assert {"B-PER", "B-LOC"} <= paris


def test_seqeval_reference_example():
    # seqeval's README example: one of two entities found exactly, one predicted wrong.
    truth = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    predicted = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = entity_scores(truth, predicted)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.5
    assert scores["f1_PER"] == 1.0 and scores["f1_MISC"] == 0.0


def test_entity_spans_follow_conlleval():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5), ("ORG", 6, 6)
    ]
    assert entity_spans(["S-PER", "B-LOC", "E-LOC", "B-LOC", "I-LOC", "E-LOC", "O"]) == [
        ("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 5)
    ]
    assert entity_spans(["O", "O"]) == []


def test_entity_scores_count_partial_and_wrong_type_spans_as_errors():
    truth = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(truth, [["B-PER", "O", "O", "B-LOC"]])["f1"] == 0.5
    assert entity_scores(truth, [["B-ORG", "I-ORG", "O", "B-LOC"]])["f1"] == 0.5
    assert entity_scores(truth, truth)["f1"] == 1.0
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0  # nothing to find, nothing found
    with pytest.raises(ValueError, match="2 true tags but 1"):
        entity_scores([["O", "O"]], [["O"]])


def small_text():
    return TaggedText(
        [["a", "b", "a"], ["c", "a"], ["b", "d", "e", "a", "b"]],
        [["B-X", "O", "B-X"], ["B-Y", "O"], ["O", "B-X", "I-X", "O", "O"]],
        "small",
    )


def test_vocabulary_round_trips_and_maps_unknown_words(tmp_path):
    vocabulary = TagVocabulary.build(small_text())
    assert vocabulary.words[:4] == ["<pad>", "<unk>", "a", "b"]  # by frequency
    assert vocabulary.tags == ["<pad>", "O", "B-X", "I-X", "B-Y"]
    assert vocabulary.encode_words(["a", "zzz"]) == [2, UNK_ID]
    vocabulary.save(tmp_path)
    again = TagVocabulary.load(tmp_path)
    assert again.words == vocabulary.words and again.tags == vocabulary.tags
    assert TagVocabulary.build(small_text(), max_words=4).words == ["<pad>", "<unk>", "a", "b"]
    odd = TaggedText([["<unk>", "<pad>", "a"]], [["O", "O", "O"]])
    assert TagVocabulary.build(odd).words == ["<pad>", "<unk>", "a"]  # no duplicate specials
    with pytest.raises(DataError, match=r"tags \['B-Z'\] do not occur"):
        vocabulary.encode_tags(["B-Z"], "valid.conll")


def test_tag_batches_stay_within_the_budget_and_align_words_with_tags():
    text = entities_split("train", sizes={"train": 600})
    vocabulary = TagVocabulary.build(text)
    encoded = encode_tagged(vocabulary, text, max_length=16, long_sentences="drop")
    assert encoded.dropped == sum(len(s) > 16 for s in text.tokens)
    batches, padding = make_batches(encoded, 256, 16, shuffle_seed=1)
    assert sum(len(words) for words, _ in batches) == len(encoded.words)
    for words, tags in batches:
        assert words.size <= 256 and words.shape == tags.shape and words.dtype == np.int32
        assert np.array_equal(words == PAD_ID, tags == 0)
    assert 0.0 <= padding < 0.3
    again, _ = make_batches(encoded, 256, 16, shuffle_seed=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))

    dropped, _ = make_batches(encoded, 256, 16, shuffle_seed=1, word_dropout=0.2)
    real = sum(int((w != PAD_ID).sum()) for w, _ in dropped)
    unknown = sum(int((w == UNK_ID).sum()) for w, _ in dropped)
    unknown_before = sum(int((w == UNK_ID).sum()) for w, _ in batches)
    assert 0.15 < (unknown - unknown_before) / real < 0.25
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, dropped))  # tags untouched


def test_packed_tag_batches_hold_every_sentence_once_in_one_shape():
    from tfx_transformer.data import BatchShapes

    text = entities_split("train", sizes={"train": 600})
    vocabulary = TagVocabulary.build(text)
    encoded = encode_tagged(vocabulary, text, max_length=32)
    shapes = BatchShapes(multiple=8, fixed=True, packed=True)
    batches, padding = make_batches(encoded, 256, 32, shuffle_seed=1, shapes=shapes, packed_width=32)
    assert {a.shape for batch in batches for a in batch} == {(8, 32)}
    found = []
    for words, segments, tags in batches:
        assert np.array_equal(words == PAD_ID, segments == 0) and np.array_equal(tags == 0, segments == 0)
        for row in range(len(words)):
            for segment in range(1, segments[row].max() + 1):
                at = segments[row] == segment
                assert np.ptp(np.flatnonzero(at)) == at.sum() - 1  # a sentence's tokens adjoin
                found.append((tuple(words[row][at]), tuple(tags[row][at])))
    assert sorted(found) == sorted(zip(map(tuple, encoded.words), map(tuple, encoded.tags)))
    real = sum(map(len, encoded.words))
    assert padding == pytest.approx(1 - real / sum(b[-1].size for b in batches))
    unpacked, unpacked_padding = make_batches(encoded, 256, 32, shuffle_seed=1,
                                              shapes=BatchShapes(multiple=8, fixed=True))
    assert padding < unpacked_padding and len(batches) < len(unpacked)

    dropped, _ = make_batches(encoded, 256, 32, shuffle_seed=1, shapes=shapes, packed_width=32,
                              word_dropout=0.2)
    changed = sum(int((a[0] != b[0]).sum()) for a, b in zip(batches, dropped))
    assert 0.15 < changed / real < 0.25
    assert all((b[0][a[0] != b[0]] == UNK_ID).all() for a, b in zip(batches, dropped))
    assert all(np.array_equal(a[1:], b[1:]) for a, b in zip(batches, dropped))  # segments, tags
