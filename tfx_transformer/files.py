"""Writing files so that a crash never leaves half of one: write beside it, then rename.

The temporary files and folders are private while they are written (mkstemp, mkdtemp); what is
renamed into place gets the permissions a plain `open()` or `os.makedirs` would give under the
process's umask, so that another user (a TF Serving process, say) can read a run and its exports.
"""

import concurrent.futures
import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in the same folder; on success it replaces `path` in one rename."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # keras insists on the ".keras" extension
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomic(path, text):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json_atomic(path, value):
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary folder beside `path`; on success it is renamed to `path`.

    Refuses to replace an existing `path`, so a version once written is never overwritten.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists already; refusing to overwrite it.")
    temporary = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~current_umask())
        os.rename(temporary, path)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)


def cache_folder():
    """Where generated built-in data is kept between runs: $TFX_TRANSFORMER_CACHE, else
    $XDG_CACHE_HOME/tfx_transformer, else ~/.cache/tfx_transformer. An empty
    TFX_TRANSFORMER_CACHE turns the cache off ("" is returned)."""
    configured = os.environ.get("TFX_TRANSFORMER_CACHE")
    if configured is not None:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfx_transformer")


def current_umask():
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class OrderedWrites:
    """Writes run one at a time, in the order given: in a thread of their own with `background`
    (the caller goes on while the disk works; what a write takes must not change meanwhile),
    in the caller's otherwise. `run` waits for the write before it, `wait` for the last; both
    raise what a write raised (a full disk, say)."""

    def __init__(self, background, name):
        self._writer = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
            if background else None
        )
        self._writing = None  # the Future of the write in progress

    def run(self, write, *args):
        self.wait()
        if self._writer is None:
            write(*args)
        else:
            self._writing = self._writer.submit(write, *args)

    def wait(self):
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()
