"""The SentencePiece tokenizer of the translation and language-model tasks: one model shared by
source and target.

Ids: `tfx_transformer.tokens` (0 padding, 1 unknown, 2 start, 3 end), then the pieces. Trained with
`sentencepiece.SentencePieceTrainer` directly, because that is what can pin those ids.
"""

import io
import os
import random

import sentencepiece

from tfx_transformer.files import atomic_path, write_json_atomic
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID, UNK_ID

MODEL_FILE = "sentencepiece.model"
INFO_FILE = "tokenizer.json"


class Tokenizer:
    """SentencePiece tokenizer with the package's special ids.

    Python side: `encode`/`decode` (lists). Graph side: `tf_tokenizer()` returns a
    tensorflow_text tokenizer that runs inside tf.data and a SavedModel.
    """

    def __init__(self, model_proto):
        self.model_proto = bytes(model_proto)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        expected = {"pad": PAD_ID, "unk": UNK_ID, "bos": START_ID, "eos": END_ID}
        actual = {
            "pad": self._processor.pad_id(),
            "unk": self._processor.unk_id(),
            "bos": self._processor.bos_id(),
            "eos": self._processor.eos_id(),
        }
        if actual != expected:
            raise ValueError(
                f"The SentencePiece model's special ids are {actual}; this package needs {expected}."
            )

    @classmethod
    def train(cls, texts, vocab_size=8000, model_type="unigram", seed=0, max_sentences=1_000_000):
        """Trains on an iterable of strings. `vocab_size` is an upper bound: a small alphabet
        (such as number words) gets the smaller vocabulary its text supports. Past
        `max_sentences`, a sample drawn with `seed` is used, so training is deterministic."""
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError("Cannot train a tokenizer on no text.")
        if len(texts) > max_sentences:
            texts = random.Random(seed).sample(texts, max_sentences)
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=START_ID,
            eos_id=END_ID,
            character_coverage=1.0,
            shuffle_input_sentence=False,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        return cls(model.getvalue())

    @property
    def vocab_size(self):
        return self._processor.get_piece_size()

    def encode(self, texts):
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, id_lists):
        """Ids -> text; stops at the end token and drops padding and the start token."""
        cleaned = []
        for ids in id_lists:
            ids = [int(i) for i in ids]
            if END_ID in ids:
                ids = ids[: ids.index(END_ID)]
            cleaned.append([i for i in ids if i not in (PAD_ID, START_ID)])
        return self._processor.decode(cleaned)

    def id_to_piece(self, token_id):
        return self._processor.id_to_piece(int(token_id))

    def tf_tokenizer(self):
        import tensorflow_text

        return tensorflow_text.SentencepieceTokenizer(model=self.model_proto)

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, MODEL_FILE)) as temporary:
            with open(temporary, "wb") as f:
                f.write(self.model_proto)
        write_json_atomic(
            os.path.join(folder, INFO_FILE),
            {
                "model_file": MODEL_FILE,
                "vocab_size": self.vocab_size,
                "pad_id": PAD_ID,
                "unk_id": UNK_ID,
                "start_id": START_ID,
                "end_id": END_ID,
            },
        )

    @classmethod
    def load(cls, folder):
        path = os.path.join(folder, MODEL_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No tokenizer in {folder}: {MODEL_FILE} is missing.")
        with open(path, "rb") as f:
            return cls(f.read())
