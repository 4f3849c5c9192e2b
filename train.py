"""Train the Transformer: `python train.py` trains on the built-in task; --help lists every option."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from tfx_transformer.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
