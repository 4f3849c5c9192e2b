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


# The environment variable that marks a process as preparing data only; `prepare` sets it in
# the encoding workers it starts.
DATA_ONLY_VARIABLE = "TFX_TRANSFORMER_DATA_ONLY"

# The model API by name: imported with the package, which registers the layers and models with
# Keras (what `keras.models.load_model` needs after a plain `import tfx_transformer`).
_MODEL_API = {
    "layers": "tfx_transformer.layers",
    **dict.fromkeys(("PRESETS", "TransformerConfig"), "tfx_transformer.config"),
    **dict.fromkeys(("beam_search", "beam_search_nbest", "greedy_decode", "sample_decode",
                     "score_targets"), "tfx_transformer.decoding"),
    **dict.fromkeys(("Transformer", "TransformerLM", "TransformerTagger"),
                    "tfx_transformer.models"),
}


def __getattr__(name):
    """A name of the model API, imported on first use in a process that prepares data only."""
    if name not in _MODEL_API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_MODEL_API[name])
    value = module if _MODEL_API[name] == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


if _runs_as("tfx_transformer.prepare") or os.environ.get(DATA_ONLY_VARIABLE) == "1":
    # Preparation runs no model: its processes leave Keras unimported (about 2 s and 0.25 GiB
    # each) and, should something ask for the model API after all, get Keras's NumPy backend
    # rather than TensorFlow where no backend was chosen.
    os.environ.setdefault("KERAS_BACKEND", "numpy")
else:
    for _name in _MODEL_API:
        __getattr__(_name)
    del _name

__version__ = "0.1.0"

__all__ = sorted(_MODEL_API)
