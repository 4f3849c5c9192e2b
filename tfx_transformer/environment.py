"""Environment variables set for the length of a block: for what reads them at that moment (a
process being started, a library call)."""

import contextlib
import os


@contextlib.contextmanager
def environment(values):
    """Sets the variables `values` ({name: string}) inside the block; afterwards each has its
    value from before again, or is unset where it was unset."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
