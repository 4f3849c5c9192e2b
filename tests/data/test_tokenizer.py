import random

import pytest

from tfx_transformer.data import DataError, Tokenizer
from tfx_transformer.data.tokenizer import alphabet_settings
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID, UNK_ID

TEXTS = ["one hundred and one", "cent un", "seventy-one", "soixante et onze", "mille"] * 20


def test_tokenizer_special_ids_and_round_trip(tmp_path):
    tokenizer = Tokenizer.train(TEXTS, vocab_size=8000)
    # The vocabulary is sized by the text, not by the requested bound.
    assert 4 < tokenizer.vocab_size < 100
    assert [tokenizer.id_to_piece(i) for i in (PAD_ID, UNK_ID, START_ID, END_ID)] == [
        "<pad>", "<unk>", "<s>", "</s>"
    ]
    ids = tokenizer.encode(["soixante et onze"])[0]
    assert min(ids) > END_ID
    assert tokenizer.decode([[START_ID] + ids + [END_ID, 7, 0]]) == ["soixante et onze"]
    tokenizer.save(tmp_path / "tok")
    again = Tokenizer.load(tmp_path / "tok")
    assert again.encode(["cent un"]) == tokenizer.encode(["cent un"])
    graph_ids = tokenizer.tf_tokenizer().tokenize(["soixante et onze"]).to_list()[0]
    assert graph_ids == ids


def test_tokenizer_training_is_deterministic():
    a = Tokenizer.train(TEXTS, seed=3, max_sentences=50)
    b = Tokenizer.train(TEXTS, seed=3, max_sentences=50)
    assert a.model_proto == b.model_proto
    assert a.encode(TEXTS) == b.encode(TEXTS)


def chinese_like(count, alphabet=4000, seed=0):
    """Sentences over a Zipf-distributed alphabet of Han characters (as Chinese text is: a few
    thousand characters make up nearly all of it, thousands more are rare)."""
    rng = random.Random(seed)
    characters = [chr(0x4E00 + i) for i in range(alphabet)]
    weights = [1 / (rank + 1) ** 1.3 for rank in range(alphabet)]
    return ["".join(rng.choices(characters, weights, k=24)) for _ in range(count)]


def test_a_rich_alphabet_gets_its_frequent_characters_and_spells_the_rest_in_bytes():
    """With every character a piece, SentencePiece refuses an alphabet larger than the
    vocabulary (it did, deep in its C++); instead the most frequent characters get pieces and
    the rarest, unseen ones too, come back whole from their UTF-8 bytes, in Python and in the
    graph."""
    texts = chinese_like(6000)
    assert len(set("".join(texts))) > 3000  # more characters than the bounds below
    assert alphabet_settings(texts, 8000) == {"character_coverage": 1.0}  # at most half of it
    assert alphabet_settings(texts, 4000) == {"character_coverage": 0.9995, "byte_fallback": True}
    settings = alphabet_settings(texts, 2000)
    assert settings["byte_fallback"] and 0.98 <= settings["character_coverage"] < 0.9995
    tokenizer = Tokenizer.train(texts, vocab_size=2000)
    assert tokenizer.vocab_size == 2000 and tokenizer.spells_in_bytes
    assert tokenizer.id_to_piece(END_ID + 1) == "<0x00>"  # the special ids stay first
    rare = texts[0][:5] + chr(0x9F00) + "文 and ü"  # 0x9F00 is in no text
    ids = tokenizer.encode([rare])[0]
    assert UNK_ID not in ids
    assert tokenizer.decode([ids]) == [rare]
    graph = tokenizer.tf_tokenizer()
    assert graph.tokenize([rare]).to_list()[0] == ids
    assert graph.detokenize([ids]).numpy()[0].decode("utf-8") == rare
    # A model may emit bytes that are no UTF-8 (a lone continuation byte, a cut sequence): the
    # text stays valid, with U+FFFD for each, as a server's JSON needs.
    broken = [END_ID + 1 + 0x80, END_ID + 1 + 0xE6, END_ID + 1 + 0x96]
    assert tokenizer.decode([broken]) == ["\ufffd" * 3]
    assert graph.detokenize([broken]).numpy()[0].decode("utf-8") == "\ufffd" * 3


def test_an_alphabet_too_rich_for_the_vocabulary_is_a_clear_error():
    texts = chinese_like(6000)
    with pytest.raises(DataError, match=r"too rich for --vocab-size 600: its [\d,]+ most frequent "
                                        r"characters .* raise --vocab-size"):
        Tokenizer.train(texts, vocab_size=600)


def test_alphabetic_text_and_small_vocabularies_keep_every_character():
    """As before rich alphabets were handled: no byte pieces where every character fits."""
    assert alphabet_settings(TEXTS, 8000) == {"character_coverage": 1.0}
    accented = [f"{word} {chr(0x100 + i)}" for i, word in enumerate(["mot"] * 300)]  # 300 letters
    assert alphabet_settings(accented, 500) == {"character_coverage": 1.0}
    assert not Tokenizer.train(accented, vocab_size=500).spells_in_bytes
