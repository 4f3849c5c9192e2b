"""The SentencePiece tokenizer of the translation and language-model tasks: one model shared by
source and target.

Ids: `tfx_transformer.tokens` (0 padding, 1 unknown, 2 start, 3 end), then the pieces. Trained with
`sentencepiece.SentencePieceTrainer` directly, because that is what can pin those ids.
"""

import collections
import io
import math
import os
import random

import sentencepiece

from tfx_transformer.data.readers import DataError
from tfx_transformer.files import atomic_path, write_json_atomic
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID, UNK_ID

MODEL_FILE = "sentencepiece.model"
SPECIAL_PIECES = 4  # padding, unknown, start, end
BYTE_PIECES = 256  # byte_fallback's <0x00> ... <0xFF>
# The share of the text's characters that get pieces of their own, in the order tried where the
# alphabet is rich for the vocabulary: SentencePiece advises 0.9995 for Chinese and Japanese and
# accepts no less than 0.98.
RICH_COVERAGES = (0.9995, 0.999, 0.998, 0.995, 0.99, 0.98)
COUNTED_TEXTS = 200_000  # texts whose characters are counted to choose the coverage
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
        `max_sentences`, a sample drawn with `seed` is used, so training is deterministic. An
        alphabet too rich for `vocab_size` (Chinese, Japanese) is covered as `alphabet_settings`
        says."""
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
            shuffle_input_sentence=False,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            **alphabet_settings(texts, vocab_size),
        )
        return cls(model.getvalue())

    @property
    def spells_in_bytes(self):
        """Whether characters without a piece are spelled in UTF-8 bytes (not <unk>)."""
        return self.vocab_size > SPECIAL_PIECES and self._processor.is_byte(SPECIAL_PIECES)

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


def alphabet_settings(texts, vocab_size):
    """SentencePiece's character_coverage (and byte_fallback) for `texts`: every character a
    piece (1.0) where the alphabet takes at most half of `vocab_size`, leaving the rest to longer
    pieces, as with alphabetic scripts (or all of a `vocab_size` under 1,024). A richer one
    (Chinese, Japanese: thousands of characters) gets pieces for the most frequent characters
    that make up 99.95% of the text (SentencePiece's advice), or a little less where those do
    not fit, and the rarest are spelled in UTF-8 bytes (byte_fallback) rather than lost as <unk>.
    Raises DataError where even 98% of the characters (SentencePiece's least) do not fit
    `vocab_size`."""
    step = max(1, len(texts) // COUNTED_TEXTS)
    counts = collections.Counter()
    for text in texts[::step]:
        counts.update(text)
    for space in [character for character in counts if character.isspace()]:
        counts["\u2581"] += counts.pop(space)  # SentencePiece counts whitespace as one symbol
    every_character = len(counts) + SPECIAL_PIECES
    # A small vocabulary keeps every character where they fit: the byte pieces would take too
    # much of it.
    small = vocab_size < 4 * BYTE_PIECES and every_character <= vocab_size
    if every_character <= vocab_size // 2 or small:
        return {"character_coverage": 1.0}
    frequencies = sorted(counts.values(), reverse=True)
    total = sum(frequencies)
    for coverage in RICH_COVERAGES:
        # SentencePiece keeps the most frequent characters until they cover `coverage`.
        needed, covered = 0, 0
        while covered < coverage * total:
            covered += frequencies[needed]
            needed += 1
        # The count is of a sample, before SentencePiece's normalization: 2% to spare.
        pieces = math.ceil(needed * 1.02) + SPECIAL_PIECES + BYTE_PIECES
        if pieces <= vocab_size:
            return {"character_coverage": coverage, "byte_fallback": True}
    raise DataError(
        f"the text's alphabet is too rich for --vocab-size {vocab_size}: its {needed:,} most "
        f"frequent characters (of {len(counts):,}) make up {RICH_COVERAGES[-1]:.0%} of it, and "
        f"with {BYTE_PIECES + SPECIAL_PIECES} byte and special pieces the vocabulary needs at "
        f"least {pieces:,} pieces; raise --vocab-size."
    )
