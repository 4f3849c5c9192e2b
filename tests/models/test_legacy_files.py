"""`.keras` files written by an earlier version of the package still load and give its logits.

The registered names (`tfx_transformer>Transformer`, ...) and the weights' paths are what a saved
file refers to; moving or renaming a class must keep them. tests/models/legacy/README.md says how
the files were written.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import tfx_transformer as tt

LEGACY = Path(__file__).resolve().parent / "legacy"


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(LEGACY / "reference.npz"))


@pytest.mark.parametrize(
    "name, model_class",
    [("transformer", tt.Transformer), ("tagger", tt.TransformerTagger), ("lm", tt.TransformerLM)],
)
def test_a_file_from_the_earlier_layout_loads_with_its_logits(name, model_class, reference):
    model = keras.models.load_model(LEGACY / f"{name}.keras")  # safe_mode=True
    assert type(model) is model_class
    inputs = {
        "transformer": {"source_ids": reference["source"], "target_ids": reference["target"]},
        "tagger": reference["source"],
        "lm": {"token_ids": reference["target"], "context_ids": reference["context"]},
    }[name]
    logits = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(logits, reference[f"{name}_logits"], rtol=1e-5, atol=1e-5)
