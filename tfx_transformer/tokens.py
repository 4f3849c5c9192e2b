"""The special token ids, the same in every vocabulary of the package (SentencePiece tokenizers
and tagging word vocabularies alike), in the models' masks and in the exports.

0 is padding everywhere: masks are derived from it and losses skip it.
"""

PAD_ID = 0  # padding: masked in attention, not scored
UNK_ID = 1  # a piece or word the vocabulary does not hold
START_ID = 2  # fed first to a decoder
END_ID = 3  # ends a sequence
