"""What a run folder guarantees: one process at a time, the umask's permissions, Ctrl-C then
--resume, a finished run left alone, one-line errors with distinct exit codes, and warnings for
runs that would train, but hardly as asked."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
import types

import pytest

from tests import ROOT
from tests.training.test_training import TINY, numbers_tsv, train
from tfx_transformer.data import split_off
from tfx_transformer.files import atomic_directory, atomic_path, write_json_atomic
from tfx_transformer.runs import RunInUse, RunPaths, claimed
from tfx_transformer.tasks import Task
from tfx_transformer.tasks.translation.data import ParallelText
from tfx_transformer.training import cli
from tfx_transformer.training.loop import warn_if_degenerate
from tfx_transformer.training.options import TrainOptions


def start_training(args, umask=None, env=None):
    def before_exec():
        # A shell that starts the suite in the background hands it SIGINT ignored, and Python
        # keeps an ignored SIGINT: Ctrl-C must reach the trainer as it does from a terminal.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if umask is not None:
            os.umask(umask)

    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, preexec_fn=before_exec,
    )


def interrupt_once(process, ready, timeout=300):
    """Sends a training process SIGINT (Ctrl-C) once `ready()` holds; returns its stderr."""
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("no checkpoint appeared: " + process.communicate()[1][-2000:])
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, message = process.communicate(timeout=120)
    return message


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# One process at a time -------------------------------------------------------------------------


def test_a_claimed_folder_refuses_a_second_claim_and_is_released(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    with claimed(paths):
        holder = json.loads(open(paths.lock).read())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunInUse, match="is in use: process"):
            with claimed(paths):
                pass
    assert not os.path.exists(paths.lock)


def test_a_lock_left_by_a_dead_process_is_reported_with_how_to_clear_it(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    os.makedirs(paths.output)
    with open(paths.lock, "w") as f:
        json.dump({"pid": gone.pid, "host": os.uname().nodename, "started": "earlier"}, f)
    with pytest.raises(RunInUse, match="no longer running") as refused:
        with claimed(paths):
            pass
    assert f"delete {paths.lock}" in str(refused.value)


def test_resume_takes_over_a_lock_whose_process_is_gone(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    os.makedirs(paths.output)
    # A killed process's lock; then one whose pid is alive but names another process (a
    # restarted container's first process gets its predecessor's pid).
    for holder in ({"pid": gone.pid, "host": os.uname().nodename},
                   {"pid": os.getpid(), "host": os.uname().nodename, "process_start": 1}):
        with open(paths.lock, "w") as f:
            json.dump(holder, f)
        with claimed(paths, resume=True):
            assert json.loads(open(paths.lock).read())["pid"] == os.getpid()
        assert not os.path.exists(paths.lock)
    # A live holder is never taken over, resume or not; nor one of another host.
    for holder in ({"pid": os.getppid(), "host": os.uname().nodename},
                   {"pid": gone.pid, "host": "elsewhere"}):
        with open(paths.lock, "w") as f:
            json.dump(holder, f)
        with pytest.raises(RunInUse):
            with claimed(paths, resume=True):
                pass


@pytest.mark.slow
def test_two_runs_started_together_one_trains_and_the_other_is_refused_at_once(tmp_path):
    data = numbers_tsv(tmp_path / "train.tsv", 300)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"tsv:{data}", "--steps", "4", *TINY]
    first, second = start_training(args, umask=0o022), start_training(args, umask=0o022)
    for process in (first, second):
        process.stderr_text = process.communicate(timeout=600)[1]
    outcomes = sorted((process.returncode, process.stderr_text) for process in (first, second))
    (trained, _), (refused, message) = outcomes
    assert (trained, refused) == (0, cli.EXIT_FOLDER_IN_USE), message
    assert "is in use" in message and "Traceback" not in message
    for process in (first, second):
        assert "cuInit" not in process.stderr_text and "oneDNN" not in process.stderr_text
    assert sorted(os.listdir(output / "export")) == ["1"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 4 and not (output / ".lock").exists()
    # Another user (TF Serving, say) can read what the run wrote, as the umask allows.
    for name in ("config.json", "metrics.json", "model.keras", "tokenizer/sentencepiece.model"):
        assert mode(output / name) == 0o644, name
    assert mode(output / "export" / "1") == 0o755


# Permissions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_get_the_permissions_the_umask_allows(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        write_json_atomic(str(tmp_path / "a.json"), {"a": 1})
        with atomic_path(str(tmp_path / "m.keras")) as temporary:
            with open(temporary, "w") as f:
                f.write("x")
        with atomic_directory(str(tmp_path / "export" / "1")) as temporary:
            open(os.path.join(temporary, "saved_model.pb"), "w").close()
    finally:
        os.umask(previous)
    assert mode(tmp_path / "a.json") == file_mode
    assert mode(tmp_path / "m.keras") == file_mode
    assert mode(tmp_path / "export" / "1") == folder_mode


# Ctrl-C, --resume, a finished run --------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_a_finished_run_is_left_alone(tmp_path):
    data = numbers_tsv(tmp_path / "train.tsv", 400)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"tsv:{data}", "--steps", "40",
            "--checkpoint-every", "5", *TINY]
    process = start_training(args)
    index = output / "checkpoints" / "checkpoint"
    message = interrupt_once(process, lambda: index.exists() and "ckpt-10" in index.read_text())
    assert process.returncode == cli.EXIT_INTERRUPTED, message[-2000:]
    assert "--resume" in message and "last checkpoint is step" in message
    assert "Traceback" not in message and not (output / ".lock").exists()

    train([*args, "--resume"])
    metrics = (output / "metrics.json").read_bytes()
    assert json.loads(metrics)["steps"] == 40
    again = train([*args, "--resume"])
    assert "is finished" in again.stdout
    assert (output / "metrics.json").read_bytes() == metrics
    assert sorted(os.listdir(output / "export")) == ["1"]


def test_ctrl_c_while_training_is_noted_for_the_step_end_and_a_second_interrupts_at_once(capsys):
    from tfx_transformer.training.loop import ctrl_c_between_steps

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
    try:
        with ctrl_c_between_steps() as ctrl_c:
            # The handlers are called as Python calls them on SIGINT: a real signal sent to
            # this process can land in a library's garbage-collection callback, which swallows
            # it (the training tests send real ones to a child process).
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
            assert ctrl_c == [signal.SIGINT]  # noted, nothing raised mid-step
            with pytest.raises(KeyboardInterrupt):
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job started in the background
        with ctrl_c_between_steps():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # stays ignored
    finally:
        signal.signal(signal.SIGINT, before)
    assert "stopping after this step" in capsys.readouterr().err


# One-line errors -------------------------------------------------------------------------------


def test_bad_outputs_and_configs_get_one_line_errors_before_the_data_step(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    cases = [
        (["--config", str(a_list)], cli.EXIT_BAD_INPUT, "expected a JSON object"),
        (["--output", str(a_file)], cli.EXIT_BAD_INPUT, "is a file"),
        (["--output", str(a_file / "run")], cli.EXIT_FILE_SYSTEM, "cannot use"),
        (["--set", "d_model=x"], cli.EXIT_BAD_INPUT, "d_model"),
    ]
    for args, code, message in cases:
        # builtin:numbers would take seconds to generate: these fail before it is read.
        assert cli.main([*args, "--data", "tsv:/nonexistent.tsv"]) == code, args
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error


# Runs that train, but hardly as asked ----------------------------------------------------------


def test_degenerate_runs_are_warned_about(capsys):
    Task.warn_if_mostly_dropped(kept=1, dropped=9, unit="pair", max_length=4)
    warn_if_degenerate(TrainOptions(batch_tokens=1), examples=10, batches=10)
    pairs = ParallelText(["a", "b", "c"], ["x", "y", "z"], origin="tsv:tiny.tsv")
    train_part, held_out = split_off(pairs, 20)
    assert (len(train_part), len(held_out)) == (2, 1)
    split_off(ParallelText(["a"] * 3000, ["x"] * 3000), 500)  # 300 held out: enough
    printed = capsys.readouterr().out
    assert "9 of 10 training pairs are longer than 4 tokens" in printed
    assert "--batch-tokens 1 leaves 1.0 examples per batch" in printed
    assert "1 held out for validation" in printed and "not the 20 asked" in printed
    warn_if_degenerate(TrainOptions(), examples=100, batches=10)
    Task.warn_if_mostly_dropped(kept=9, dropped=1, unit="pair", max_length=4)
    assert "warning" not in capsys.readouterr().out


def test_a_run_saved_before_packing_resumes_unpacked(tmp_path):
    """Its config.json has no "packing": it trained unpacked, and goes on so, resumed again and
    again (each resume rewrites config.json); several processes cannot all read the chief's
    folder, so the chief says what they must be told where their default differs."""
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training.options import TrainOptions
    from tfx_transformer.training.resume import check_output_folder, check_packing_agrees

    output = tmp_path / "run"
    output.mkdir()
    saved = TrainOptions(output=str(output)).to_dict()
    del saved["packing"]
    (output / "config.json").write_text(json.dumps({"options": saved, "model": {}}))
    paths = RunPaths(str(output))
    options = TrainOptions(output=str(output), resume=True)
    assert check_output_folder(options, paths) is False
    assert options.packing is False
    # What the resumed run writes (loop.prepare), and the same command once more.
    (output / "config.json").write_text(
        json.dumps({"options": options.to_dict(), "model": {}, "packed": False}))
    again = TrainOptions(output=str(output), resume=True)
    assert check_output_folder(again, paths) is False and again.packing is False
    with pytest.raises(ValueError, match="packing: saved False, now True"):
        check_output_folder(TrainOptions(output=str(output), resume=True, packing=True), paths)

    (output / "config.json").write_text(json.dumps({"options": saved, "model": {}}))
    chief = TrainOptions(output=str(output), resume=True)
    assert check_output_folder(chief, paths, 2) is False
    assert chief.packing is None  # the other processes would not know
    check_packing_agrees(chief, False, packed=False)  # TensorFlow's default: nothing to say
    with pytest.raises(ValueError, match="add --no-packing to every process's command"):
        check_packing_agrees(chief, False, packed=True)  # JAX's
    told = TrainOptions(output=str(output), resume=True, packing=False)
    assert check_output_folder(told, paths, 2) is False


def test_a_resumed_run_packs_as_it_trained_on_either_backend(tmp_path):
    """A run that packed (JAX's default) resumes packed where the default differs (TensorFlow),
    and one that did not resumes unpacked; --packing or --no-packing must agree with it."""
    import dataclasses

    from tfx_transformer.data.batching import BatchShapes
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training.loop import packing_shapes
    from tfx_transformer.training.options import TrainOptions
    from tfx_transformer.training.resume import check_output_folder

    output = tmp_path / "run"
    output.mkdir()
    paths = RunPaths(str(output))
    saved = TrainOptions(output=str(output)).to_dict()
    for packed in (True, False):
        (output / "config.json").write_text(
            json.dumps({"options": saved, "model": {}, "packed": packed}))
        options = TrainOptions(output=str(output), resume=True)
        assert check_output_folder(options, paths) is packed and options.packing is packed
        told = TrainOptions(output=str(output), resume=True, packing=packed)
        check_output_folder(told, paths)  # saying what it did is no change
        with pytest.raises(ValueError, match=f"packing: saved {packed}, now {not packed}"):
            check_output_folder(
                TrainOptions(output=str(output), resume=True, packing=not packed), paths)
        # The engine's default shapes (TensorFlow's unpacked, JAX's packed) follow the option.
        can_pack = types.SimpleNamespace(packing_refusal=lambda model_config: None)
        for default in (BatchShapes(), BatchShapes(multiple=8, fixed=True, packed=True)):
            shapes = packing_shapes(options, can_pack, None, default)
            assert shapes == dataclasses.replace(default, packed=packed)


def test_a_tagging_run_saved_before_the_tagger_packed_resumes_unpacked(tmp_path):
    """Its config.json has "packing" (None: the backend's default) but no "packed": then no
    tagging run packed, so it goes on unpacked; one saved since says whether it packs."""
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training.options import TrainOptions
    from tfx_transformer.training.resume import check_output_folder

    output = tmp_path / "run"
    output.mkdir()
    saved = TrainOptions(output=str(output), task="tagging").to_dict()
    config = {"options": saved, "model": {}}
    (output / "config.json").write_text(json.dumps(config))
    options = TrainOptions(output=str(output), task="tagging", resume=True)
    check_output_folder(options, RunPaths(str(output)))
    assert options.packing is False
    (output / "config.json").write_text(json.dumps({**config, "packed": True}))
    options = TrainOptions(output=str(output), task="tagging", resume=True)
    check_output_folder(options, RunPaths(str(output)))
    assert options.packing is True  # as it trained, whatever the backend's default
    # A translation run saved before runs wrote "packed": its --packing, the backend's default.
    config["options"] = TrainOptions(output=str(output)).to_dict()
    (output / "config.json").write_text(json.dumps(config))
    options = TrainOptions(output=str(output), resume=True)
    check_output_folder(options, RunPaths(str(output)))
    assert options.packing is None


def test_a_run_resumes_only_on_the_backend_of_its_newest_checkpoint(tmp_path):
    """Each engine reads only its own checkpoints; the other would train again over the run."""
    from tfx_transformer.training.resume import check_checkpoints_readable

    paths = RunPaths(str(tmp_path / "run"))
    check_checkpoints_readable(paths, "jax")  # no checkpoints yet: nothing to read
    os.makedirs(paths.checkpoints)
    for name in ("checkpoint", "ckpt-4.index", "ckpt-4.data-00000-of-00001", "best.npz"):
        open(os.path.join(paths.checkpoints, name), "w").close()
    check_checkpoints_readable(paths, "tensorflow")
    with pytest.raises(ValueError, match=r"\(step 4\) was written on the tensorflow backend.*"
                                         r"KERAS_BACKEND=tensorflow"):
        check_checkpoints_readable(paths, "jax")
    open(os.path.join(paths.checkpoints, "ckpt-6.npz"), "w").close()  # JAX went on from there
    check_checkpoints_readable(paths, "jax")
    with pytest.raises(ValueError, match=r"\(step 6\) was written on the jax backend"):
        check_checkpoints_readable(paths, "tensorflow")
