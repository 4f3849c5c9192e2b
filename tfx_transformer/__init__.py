"""tfx_transformer: the encoder-decoder Transformer as Keras 3 layers, from training to serving.

The public API is what this module and `tfx_transformer.layers` export (README's Python API).
The folders, by concern: layers/ (one concept per file), models/, data/ (what every task's data
shares), tasks/ (one folder per task, and the registry), training/ (`python train.py`), export/
(SavedModels for TF Serving); decoding.py, config.py and tokens.py serve them all.
"""

import os
import sys


def _runs_as(module):
    """Whether this process is `python [flags] -m module ...`."""
    argv = getattr(sys, "orig_argv", [])
    return "-m" in argv and argv[argv.index("-m") + 1 :][:1] == [module]


if _runs_as("tfx_transformer.prepare") and "keras" not in sys.modules:
    # Preparation runs no model: Keras's NumPy backend serves it, as it serves its encoding
    # workers, and spares the process TensorFlow's import (about 4 s and 0.45 GiB) where no
    # backend was chosen.
    os.environ.setdefault("KERAS_BACKEND", "numpy")

from tfx_transformer import layers  # noqa: E402  (after the backend is chosen)
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
