"""Train the Transformer: `python train.py` trains on the built-in task; --help lists every option."""

import time

STARTED = time.time()  # --time-budget counts the whole job, its imports included

import atexit  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

# TensorFlow's C++ side writes start-up notices to file descriptor 2 whatever
# TF_CPP_MIN_LOG_LEVEL says (CUDA probing on a machine without a GPU, oneDNN notices), and they
# read as errors. These lines are dropped; every other line of stderr passes, errors included.
NATIVE_NOISE = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [0-9:.]+ +\d+ \S+\.cc:\d+\]"
    r"|E\d{4} [0-9:.]+ +\d+ (cuda_platform|cuda_executor|cuda_diagnostics|util)\.cc:\d+\]"
)
# A process of its own, so that it still passes on what a crashing trainer wrote last; it ends
# when the trainer's end of the pipe closes.
FILTER = (
    "import re, signal, sys\n"
    # Ctrl-C reaches the whole process group: the filter stays to pass on the trainer's last words.
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "noise = re.compile(sys.argv[1].encode())\n"
    "for line in sys.stdin.buffer:\n"
    "    if not noise.match(line):\n"
    "        sys.stderr.buffer.write(line)\n"
    "        sys.stderr.buffer.flush()\n"
)


def filter_native_stderr():
    original = os.dup(2)
    stderr_filter = subprocess.Popen([sys.executable, "-c", FILTER, NATIVE_NOISE], stdin=subprocess.PIPE)
    os.dup2(stderr_filter.stdin.fileno(), 2)
    stderr_filter.stdin.close()  # fd 2 is now the pipe's only writer here

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe: the filter passes on the rest and exits
        stderr_filter.wait(timeout=10)

    atexit.register(restore)


def print_help():
    """`--help` alone: the saved help text (tfx_transformer/training/cli.py says why)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfx_transformer", "training",
                        "train_help.txt")
    with open(path, encoding="utf-8") as f:
        sys.stdout.write(f.read())


if __name__ == "__main__":
    if sys.argv[1:] in (["--help"], ["-h"]):
        print_help()
        sys.exit(0)
    if "--verbose" not in sys.argv[1:]:
        filter_native_stderr()
    from tfx_transformer.training.cli import main

    sys.exit(main(started=STARTED))
