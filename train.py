"""Train the Transformer: `python train.py` trains on the built-in task; --help lists every option."""

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


@contextlib.contextmanager
def native_stderr_dropped(dropped):
    """TensorFlow's C++ start-up lines (CUDA probing, oneDNN notices) are written to file
    descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says, and read as errors; they are dropped while
    TensorFlow loads and probes its devices. Python's own errors still surface after it."""
    if not dropped:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if __name__ == "__main__":
    with native_stderr_dropped("--verbose" not in sys.argv[1:]):
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe, here rather than mid-run
        from tfx_transformer.training.cli import main
    sys.exit(main())
