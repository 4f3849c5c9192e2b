"""tfx_transformer: the encoder-decoder Transformer as Keras 3 layers, from training to serving.

The public API is what this module and `tfx_transformer.layers` export (README's Python API).
The folders, by concern: layers/ (one concept per file), models/, data/ (what every task's data
shares), tasks/ (one folder per task, and the registry), training/ (`python train.py`), export/
(SavedModels for TF Serving); decoding.py, config.py and tokens.py serve them all.
"""

from tfx_transformer import layers
from tfx_transformer.config import PRESETS, TransformerConfig
from tfx_transformer.decoding import (
    beam_search,
    beam_search_nbest,
    greedy_decode,
    sample_decode,
    score_targets,
)
from tfx_transformer.models import Transformer, TransformerLM, TransformerTagger

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Transformer",
    "TransformerConfig",
    "TransformerLM",
    "TransformerTagger",
    "beam_search",
    "beam_search_nbest",
    "greedy_decode",
    "layers",
    "sample_decode",
    "score_targets",
]
