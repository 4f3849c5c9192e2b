"""Tagged text for `--task tagging`: CoNLL files, the built-in entity set, encoding, batches.

Specs: `conll:PATH` (one token and its tag per line, whitespace between them, the tag in the
last column, a blank line between sentences; `-DOCSTART-` lines are skipped) and
`builtin:entities`, generated from templates with no download.

Tags follow BIO (IOB2), or IOBES: `O`, `B-TYPE`, `I-TYPE`, `E-TYPE`, `S-TYPE`. Tokens are words:
the model reads the tokens as they are in the file, and the export splits text on whitespace.
"""

import dataclasses
import random
import re

import numpy as np

from tfx_transformer.data import (
    BatchShapes,
    DataError,
    batch_indices,
    pack_indices,
    packing_width,
    pad_rows,
    padding_fraction,
    read_lines,
)
from tfx_transformer.tokens import PAD_ID, UNK_ID

TAG_PATTERN = re.compile(r"^(O|[BIES]-\S+)$")


@dataclasses.dataclass
class TaggedText:
    """Sentences as token lists with one tag per token."""

    tokens: list
    tags: list
    origin: str = ""
    unit = "sentence"

    def __len__(self):
        return len(self.tokens)

    def subset(self, indices):
        return TaggedText(
            [self.tokens[i] for i in indices], [self.tags[i] for i in indices], self.origin
        )


# Readers ---------------------------------------------------------------------------------------


def read_conll(path):
    """A CoNLL-style file: `token [other columns] tag` per line, blank lines between sentences."""
    tokens, tags, sentences_tokens, sentences_tags = [], [], [], []

    def close_sentence():
        if tokens:
            sentences_tokens.append(list(tokens))
            sentences_tags.append(list(tags))
            tokens.clear()
            tags.clear()

    for number, line in enumerate(read_lines(path), start=1):
        columns = line.split()
        if not columns:
            close_sentence()
            continue
        if columns[0] == "-DOCSTART-":
            close_sentence()
            continue
        if len(columns) < 2:
            raise DataError(
                f"{path}:{number}: expected a token and its tag separated by whitespace; "
                f"received {line[:80]!r}."
            )
        tag = columns[-1]
        if not TAG_PATTERN.match(tag):
            raise DataError(
                f"{path}:{number}: the tag {tag!r} is not O or B-/I-/E-/S- followed by a type "
                "(BIO or IOBES)."
            )
        tokens.append(columns[0])
        tags.append(tag)
    close_sentence()
    if not sentences_tokens:
        raise DataError(f"{path}: no tagged sentences.")
    return TaggedText(sentences_tokens, sentences_tags, f"conll:{path}")


# The built-in entity set -----------------------------------------------------------------------

ENTITY_SPLITS = {"train": 8_000, "validation": 500, "test": 1_000}

FIRST_NAMES = (
    "Anna Ben Carla David Emma Frank Grace Hugo Ines Jonas Karin Leo Maria Nina Oscar Paula "
    "Rosa Simon Tara Victor Wendy Yusuf Zoe Amir Bianca Chen Dora Elif Farid Greta"
).split()
# Words that name a person in one sentence and a place in another: only context decides.
AMBIGUOUS = "Paris Florence Austin Jordan Victoria Charlotte Chelsea Georgia Sydney Madison".split()
SURNAMES = (
    "Morgan Fischer Novak Silva Tanaka Okafor Larsen Moreau Rossi Kowalski Haddad Nguyen Berg "
    "Costa Dubois Ivanova Keller Lindqvist Mendes Petrov Quinn Sato Weber Young Abbott Baker "
    "Castillo Duarte Eriksen Fontaine Garnier Horvat Jansen Kaplan Lopez Meyer Olsen Park Reyes Stone"
).split()
CITIES = ["New York", "San Diego", "Buenos Aires"] + (
    "Lyon Berlin Lisbon Oslo Quito Lagos Osaka Dublin Krakow Porto Tunis Hanoi Lima Accra "
    "Bergen Genoa Leeds Malmo Nantes Perth Riga Seville Turin Utrecht Valencia Zagreb Bremen"
).split() + ["Le Havre"]
ORG_WORDS = (
    "Acme Globex Initech Umbrella Stark Wayne Hooli Vandelay Soylent Cyberdyne Tyrell Wonka "
    "Aperture Massive Nakatomi Oscorp Pied Sterling Vehement Zorg Blue Kite Delta Apex Nimbus"
).split()
ORG_SUFFIXES = ["Inc.", "Corp.", "Group", "Bank", "Labs"]
MONTHS = (
    "January February March April May June July August September October November December"
).split()

TEMPLATES = [
    "{PER} joined {ORG} in {LOC} on the {DAY} .",
    "{ORG} opened an office in {LOC} in {MONTH} .",
    "{PER} said that {ORG} sold {NUM} cars in {MONTH} .",
    "In {LOC} , {PER} met {PER} and {PER} .",
    "{PER} moved from {LOC} to {LOC} with {NUM} boxes .",
    "Shares of {ORG} rose {NUM} points on the {DAY} .",
    "Police in {LOC} questioned {PER} about {NUM} missing files .",
    "The meeting between {PER} and {ORG} on the {DAY} lasted {NUM} hours .",
    "{PER} , who lives in {LOC} , works for {ORG} .",
    "{ORG} hired {NUM} engineers in {LOC} last year .",
    "{PER} was born in {LOC} in {MONTH} .",
    "Since {MONTH} , {ORG} has paid {PER} {NUM} dollars .",
    "{LOC} and {LOC} signed a deal with {ORG} .",
    "{PER} thanked {PER} for the {NUM} letters .",
    "On the {DAY} {PER} flew to {LOC} .",
    "{PER} left {ORG} after {NUM} years .",
]
SLOT_TYPES = {"PER": "PER", "ORG": "ORG", "LOC": "LOC", "DAY": "DATE", "MONTH": "DATE", "NUM": "NUM"}


def _pools(split):
    """Name pools: a quarter of surnames, cities and organization words appear only outside
    training, so validation and test need context to tag words the model has never seen."""

    def cut(words):
        held = max(1, len(words) // 4)
        return words[:-held] if split == "train" else words

    return {
        "first": FIRST_NAMES + AMBIGUOUS,
        "surname": cut(SURNAMES),
        "city": cut(CITIES) + AMBIGUOUS,
        "org": cut(ORG_WORDS) + cut(SURNAMES),  # "Morgan Inc." is a company, "Ana Morgan" a person
    }


def _entity(slot, rng, pools):
    from num2words import num2words

    if slot == "PER":
        words = [rng.choice(pools["first"])]
        if rng.random() < 0.6:
            words.append(rng.choice(pools["surname"]))
        return words
    if slot == "ORG":
        return [rng.choice(pools["org"]), rng.choice(ORG_SUFFIXES)]
    if slot == "LOC":
        return rng.choice(pools["city"]).split()
    if slot == "DAY":
        return [num2words(rng.randint(1, 28), to="ordinal"), "of", rng.choice(MONTHS)]
    if slot == "MONTH":
        return [rng.choice(MONTHS), str(rng.randint(1950, 2030))]
    return num2words(rng.randint(2, 999)).split()  # NUM: "three hundred and twelve"


def entities_split(split, seed=0, sizes=None):
    """Template sentences with people, organizations, places, dates and numbers tagged in BIO.

    Deterministic from `seed`; the splits differ in their seeds and in the name pools (see
    `_pools`). Ambiguous words ("Paris", "May", "and", surnames as company names) are tagged by
    what is around them, on the left or on the right.
    """
    sizes = {**ENTITY_SPLITS, **(sizes or {})}
    if split not in sizes:
        raise DataError(f"builtin:entities has the splits {sorted(sizes)}; received {split!r}.")
    rng = random.Random(f"{seed}-{split}")
    pools = _pools(split)
    sentences, tags = [], []
    for _ in range(sizes[split]):
        sentence_tokens, sentence_tags = [], []
        for word in rng.choice(TEMPLATES).split():
            slot = word[1:-1] if word.startswith("{") else None
            if slot is None:
                sentence_tokens.append(word)
                sentence_tags.append("O")
                continue
            words = _entity(slot, rng, pools)
            kind = SLOT_TYPES[slot]
            sentence_tokens.extend(words)
            sentence_tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1))
        sentences.append(sentence_tokens)
        tags.append(sentence_tags)
    return TaggedText(sentences, tags, f"builtin:entities[{split}]")


def load_spec(spec, split="train", seed=0):
    kind, _, rest = spec.partition(":")
    if kind == "builtin":
        if rest != "entities":
            raise DataError(
                f"Unknown built-in tagging set {rest!r}; the built-in one is 'entities'."
            )
        return entities_split(split, seed)
    if kind == "conll" and rest:
        return read_conll(rest)
    raise DataError(f"Unknown tagging data spec {spec!r}: use builtin:entities or conll:PATH.")


# Encoding and batches ------------------------------------------------------------------------


@dataclasses.dataclass
class EncodedTags:
    words: list
    tags: list
    dropped: int = 0
    truncated: int = 0


def encode_tagged(vocabulary, data, max_length, long_sentences="drop"):
    """Word and tag ids; sentences over `max_length` tokens are dropped or truncated."""
    words, tags, dropped, truncated = [], [], 0, 0
    for sentence, sentence_tags in zip(data.tokens, data.tags):
        if len(sentence) > max_length:
            if long_sentences == "drop":
                dropped += 1
                continue
            truncated += 1
        words.append(vocabulary.encode_words(sentence[:max_length]))
        tags.append(vocabulary.encode_tags(sentence_tags[:max_length], data.origin))
    return EncodedTags(words, tags, dropped, truncated)


def make_batches(
    encoded, batch_tokens, max_length, shuffle_seed=None, shapes=BatchShapes(), word_dropout=0.0,
    packed_width=None,
):
    """(word ids [B, S], tag ids [B, S]) int32 batches within `batch_tokens`, and the padding.
    With `shapes.packed`, sentences packed into rows of `packed_width` tokens (None: the
    `data.packing_width` of a model 512 wide), every batch (word ids, segment ids, tag ids) of
    one shape: `shapes.rows` rows, the last batch filled with empty rows (segment ids number a
    row's sentences 1, 2, ..., 0 on padding: what `TransformerTagger` takes as "segment_ids").

    `word_dropout` replaces that share of the words with <unk> (drawn from `shuffle_seed`), so the
    model learns to tag from context the words it will not know at test time.
    """
    lengths = [len(w) for w in encoded.words]
    if shapes.packed:
        width = packed_width or packing_width(lengths, max_length, shapes, 512)
        batches = _packed_batches(encoded, lengths, batch_tokens, width, shuffle_seed, shapes)
    else:
        batches = _bucketed_batches(encoded, lengths, batch_tokens, max_length, shuffle_seed, shapes)
    if word_dropout:
        rng = np.random.default_rng(None if shuffle_seed is None else shuffle_seed + 1)
        batches = [(_drop_words(batch[0], word_dropout, rng),) + batch[1:] for batch in batches]
    return batches, padding_fraction([b[-1] for b in batches])


def _bucketed_batches(encoded, lengths, batch_tokens, max_length, shuffle_seed, shapes):
    # Unsorted: in sentences made from templates, equal length often means the same template,
    # and batches of one template cost the built-in task ~2 F1 points (validation 97.38 vs 99.05).
    chunks = batch_indices(
        lengths, batch_tokens, max_length, shuffle_seed, sort_by_length=False, shapes=shapes
    )
    batches = []
    for chunk in chunks:
        shape = shapes.shape_for(max(lengths[i] for i in chunk), batch_tokens, max_length)
        words = pad_rows([encoded.words[i] for i in chunk], shapes.multiple, shape)
        tags = pad_rows([encoded.tags[i] for i in chunk], shapes.multiple, shape)
        batches.append((words, tags))
    return batches


def _packed_batches(encoded, lengths, batch_tokens, width, shuffle_seed, shapes):
    shape = (shapes.rows(batch_tokens, width), width)
    batches = []
    for batch in pack_indices(np.array(lengths)[:, None], width, shape[0], shuffle_seed):
        words = [[w for i in row for w in encoded.words[i]] for row in batch]
        segments = [[n for n, i in enumerate(row, 1) for _ in encoded.words[i]] for row in batch]
        tags = [[t for i in row for t in encoded.tags[i]] for row in batch]
        batches.append(tuple(pad_rows(side, shape=shape) for side in (words, segments, tags)))
    return batches


def _drop_words(words, share, rng):
    unknown = (rng.random(words.shape) < share) & (words != PAD_ID)
    return np.where(unknown, UNK_ID, words).astype("int32")
