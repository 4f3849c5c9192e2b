"""TensorFlow's `saved_model_cli` with the tensorflow_text ops loaded, so `run` works on the export.

    python -m tfx_transformer.export.saved_model_cli run --dir runs/default/export/1 --tag_set serve \\
        --signature_def serving_default --input_exprs 'text=["seventy-one"]'

(`saved_model_cli show` needs no ops and works as it is.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_text  # noqa: E402,F401  (registers the SentencePiece ops)
from tensorflow.python.tools import saved_model_cli  # noqa: E402

if __name__ == "__main__":
    saved_model_cli.main()
