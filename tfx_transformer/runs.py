"""The layout of a run folder (`--output DIR`), spelled here and nowhere else: training writes
it, `--resume` and the export read it.

    DIR/config.json        every option and the model config
    DIR/tokenizer/         the vocabulary (SentencePiece model, or a tagging vocabulary)
    DIR/logs/train/, DIR/logs/validation/   TensorBoard event files
    DIR/checkpoints/       for --resume
    DIR/model.keras        the trained model
    DIR/export/<version>/  SavedModels for TF Serving
    DIR/ctranslate2/<version>/  CTranslate2 models (python -m tfx_transformer.export --format ctranslate2)
    DIR/metrics.json       the final metrics
    DIR/.lock              while a process trains into DIR: its pid and host
"""

import contextlib
import json
import os
import socket
import time

import keras

from tfx_transformer.files import read_json
from tfx_transformer.reporting import log


class RunPaths:
    def __init__(self, output):
        self.output = output
        self.config = os.path.join(output, "config.json")
        self.tokenizer = os.path.join(output, "tokenizer")
        self.logs = os.path.join(output, "logs")
        self.train_logs = os.path.join(self.logs, "train")
        self.validation_logs = os.path.join(self.logs, "validation")
        self.checkpoints = os.path.join(output, "checkpoints")
        self.model = os.path.join(output, "model.keras")
        self.export = os.path.join(output, "export")
        self.ctranslate2 = os.path.join(output, "ctranslate2")  # not under export/: TF Serving polls it
        self.metrics = os.path.join(output, "metrics.json")
        self.lock = os.path.join(output, ".lock")

    def saved_config(self):
        """config.json as written by training: {"options": {...}, "model": {...}}."""
        if not os.path.exists(self.config):
            raise FileNotFoundError(
                f"{self.config} does not exist: {self.output} holds no training run; train first "
                "(python train.py --output DIR)."
            )
        with open(self.config, encoding="utf-8") as f:
            return json.load(f)

    def task_name(self):
        """The --task the run trained (config.json; runs from before --task are translation)."""
        return self.saved_config()["options"].get("task", "translation")

    def trained_model(self):
        """model.keras, loaded (the package's classes are registered by importing it)."""
        if not os.path.exists(self.model):
            raise FileNotFoundError(f"{self.model} does not exist: train first (python train.py).")
        return keras.models.load_model(self.model)


class RunInUse(ValueError):
    """The run folder is claimed by another process (or by one that died holding it)."""


@contextlib.contextmanager
def claimed(paths, resume=False):
    """Holds DIR/.lock for the duration: created atomically, so that of two processes started
    together on one folder exactly one gets it; the other is refused at once, before any slow
    work. The folder is created if need be (which also proves it writable), and removed again if
    the run ends before writing anything into it.

    `resume` (--resume): a lock left by a process of this host that is no longer running (killed,
    as a cluster manager restarting a job finds it) is taken over instead of refused."""
    if os.path.exists(paths.output) and not os.path.isdir(paths.output):
        raise ValueError(f"--output {paths.output} is a file; a run needs a folder.")
    created = not os.path.exists(paths.output)
    os.makedirs(paths.output, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "process_start": _process_start(os.getpid())}
    holder = _holder(paths) if resume else None
    if holder is not None and holder[3]:
        log(f"{paths.lock} was left by a process that is no longer running; resuming in its place")
        with contextlib.suppress(FileNotFoundError):
            os.remove(paths.lock)
    _create_lock(paths, owner)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(paths.lock)
        if created and not os.listdir(paths.output):
            os.rmdir(paths.output)


def _create_lock(paths, owner):
    """DIR/.lock with its owner inside, created whole or not at all: written beside it, then
    hard-linked into place (which fails if it exists), so that a second process never reads a
    half-written lock. Where hard links are not supported, an O_EXCL create and a write."""
    temporary = f"{paths.lock}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(owner, f)
    try:
        os.link(temporary, paths.lock)
    except FileExistsError:
        raise RunInUse(_holder_message(paths)) from None
    except OSError:  # no hard links on this file system
        try:
            handle = os.open(paths.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            raise RunInUse(_holder_message(paths)) from None
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(owner, f)
    finally:
        os.remove(temporary)


def _holder(paths):
    """(pid, host, started, gone) of the process DIR/.lock names, `gone` when it is of this
    host and no longer running, or its pid has been taken by another process since (a restarted
    container's first process has the pid of the last one's); None when unreadable."""
    try:
        holder = read_json(paths.lock)
        pid, host, started = int(holder["pid"]), str(holder["host"]), holder.get("started", "?")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    recorded = holder.get("process_start")
    gone = host == socket.gethostname() and (
        not _alive(pid) or (recorded is not None and recorded != _process_start(pid))
    )
    return pid, host, started, gone


def _holder_message(paths):
    holder = _holder(paths)
    if holder is None:
        return (
            f"{paths.output} is claimed by another process ({paths.lock} exists). If none trains "
            f"into it, delete {paths.lock} and run again."
        )
    pid, host, started, gone = holder
    if gone:
        return (
            f"{paths.lock} was left by process {pid}, which is no longer running (it was killed "
            f"while training). If no other process uses {paths.output}, delete {paths.lock} and "
            "run again (with --resume to continue from its last checkpoint)."
        )
    return (
        f"{paths.output} is in use: process {pid} on {host} has been training into it since "
        f"{started}. Wait for it to finish, or choose another --output."
    )


def _process_start(pid):
    """When process `pid` started, in clock ticks since boot (Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
