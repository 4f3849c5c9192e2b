"""The tagging task's vocabulary: words and tags as ids, saved in a run's tokenizer/ folder."""

import json
import os

from tfx_transformer.data import DataError
from tfx_transformer.files import write_json_atomic
from tfx_transformer.tokens import UNK_ID


PAD, UNK = "<pad>", "<unk>"  # the words of ids PAD_ID and UNK_ID


class TagVocabulary:
    """Words and tags as ids: words 0 = padding, 1 = unknown; tags 0 = padding (never predicted)."""

    FILE = "vocabulary.json"

    def __init__(self, words, tags):
        self.words = list(words)
        self.tags = list(tags)
        if self.words[:2] != [PAD, UNK] or self.tags[:1] != [PAD]:
            raise ValueError("A tag vocabulary starts with <pad>, <unk> words and the <pad> tag.")
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.tag_ids = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def build(cls, data, min_count=1, max_words=None):
        """Words seen at least `min_count` times in `data`, the `max_words` most frequent (the
        two special words included) when given, and every tag of `data`."""
        counts = {}
        for sentence in data.tokens:
            for word in sentence:
                if word not in (PAD, UNK):  # a text's own "<unk>" is simply unknown
                    counts[word] = counts.get(word, 0) + 1
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_words is not None:
            words = words[: max(0, max_words - 2)]
        tags = sorted({t for sentence in data.tags for t in sentence}, key=lambda t: (t != "O", t[2:], t))
        return cls([PAD, UNK] + words, [PAD] + tags)

    @property
    def vocab_size(self):
        return len(self.words)

    @property
    def num_tags(self):
        return len(self.tags)

    def encode_words(self, tokens):
        """Word ids; unknown words, and a text's own "<pad>", are <unk>."""
        return [self.word_ids.get(w, UNK_ID) or UNK_ID for w in tokens]

    def encode_tags(self, tags, origin=""):
        unknown = sorted(set(tags) - set(self.tag_ids))
        if unknown:
            raise DataError(
                f"{origin}: tags {unknown} do not occur in the training data, so the model "
                "cannot predict them."
            )
        return [self.tag_ids[t] for t in tags]

    def decode_tags(self, ids):
        return [self.tags[i] if 0 < i < len(self.tags) else "O" for i in ids]

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        write_json_atomic(os.path.join(folder, self.FILE), {"words": self.words, "tags": self.tags})

    @classmethod
    def load(cls, folder):
        with open(os.path.join(folder, cls.FILE), encoding="utf-8") as f:
            saved = json.load(f)
        return cls(saved["words"], saved["tags"])
