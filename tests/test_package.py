"""`import tfx_transformer`: the model API up front (its import registers the layers and models
with Keras, which `load_model` needs: tests/models/test_saving.py loads after nothing else); in a
process that prepares data only, neither Keras nor TensorFlow until the model API is asked for."""

import os
import subprocess
import sys
import textwrap

import pytest

import tfx_transformer
from tests import ROOT


def test_every_public_name_is_there_after_a_plain_import():
    from tfx_transformer import decoding, models

    assert tfx_transformer.__all__ == sorted(tfx_transformer.__all__)
    assert tfx_transformer.Transformer is models.Transformer
    assert tfx_transformer.beam_search is decoding.beam_search
    assert tfx_transformer.layers is sys.modules["tfx_transformer.layers"]
    with pytest.raises(AttributeError, match="no attribute 'Transformers'"):
        tfx_transformer.Transformers  # noqa: B018


DATA_ONLY = textwrap.dedent(
    """
    import sys
    import tfx_transformer
    import tfx_transformer.tasks.translation.prepare
    before = sorted(name for name in ("keras", "tensorflow") if name in sys.modules)
    from tfx_transformer import Transformer, layers
    import keras
    assert Transformer is sys.modules["tfx_transformer.models"].Transformer
    assert layers is sys.modules["tfx_transformer.layers"]
    assert keras.saving.get_registered_object("tfx_transformer>Transformer") is Transformer
    print(before, keras.backend.backend(), "tensorflow" in sys.modules)
    """
)


def test_a_process_that_prepares_data_only_imports_keras_when_asked_for_a_model():
    env = {**os.environ, tfx_transformer.DATA_ONLY_VARIABLE: "1"}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, "-c", DATA_ONLY], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]", "numpy", "False"]
