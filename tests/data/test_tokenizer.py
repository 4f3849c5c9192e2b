from tfx_transformer.data import Tokenizer
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
