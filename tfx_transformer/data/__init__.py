"""What every task's data shares: reading files (errors name file and line), holding out a
validation split, batching by a token budget, and the SentencePiece tokenizer.

A task's own formats, built-in sets and encodings live in its folder under `tasks/`.
"""

from tfx_transformer.data.batching import (
    BatchShapes,
    batch_indices,
    bucket_boundaries,
    pack_indices,
    packing_width,
    pad_rows,
    padding_fraction,
)
from tfx_transformer.data.readers import DataError, decode_lines, read_lines
from tfx_transformer.data.splits import split_off
from tfx_transformer.data.tokenizer import Tokenizer

__all__ = [
    "BatchShapes",
    "DataError",
    "Tokenizer",
    "batch_indices",
    "bucket_boundaries",
    "decode_lines",
    "pack_indices",
    "packing_width",
    "pad_rows",
    "padding_fraction",
    "read_lines",
    "split_off",
]
