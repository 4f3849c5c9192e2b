"""The package's tests, in folders that mirror the package's (layers/, models/, tasks/<task>/,
training/, export/) and serve/; helpers for several of them sit here."""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
# The development material beside the checkout (a real corpus); tests that read it skip without it.
SHARED = ROOT.parent / "shared"
MULTI30K = SHARED / "data" / "multi30k-en-fr"


def benchmark_module(name):
    """`benchmarks/<name>.py` as a module (the benchmarks import `common` from beside them). The
    environment is left as it was: a benchmark may set KERAS_BACKEND for its own process, which
    the processes a test worker starts later must not inherit."""
    folder = str(ROOT / "benchmarks")
    environment = dict(os.environ)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
        if dict(os.environ) != environment:
            os.environ.clear()
            os.environ.update(environment)
    return module
