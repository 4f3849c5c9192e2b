"""`python train.py` on the JAX backend: every task end to end, resume, a run with TensorFlow
blocked, the export of a JAX run's model.keras by TensorFlow, data parallelism over two CPU
devices, and the loss it reaches against the TensorFlow engine's.

Keras fixes its backend at import, so every JAX case runs in its own process.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.training.test_training import ROOT, TINY, event_tags, numbers_tsv, train

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

JAX = {"KERAS_BACKEND": "jax"}

# Imports of tensorflow (and its add-ons) fail, as on a machine without it; then train.py runs.
WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import runpy, sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_text", "tf_keras"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


# train.py, and at its exit a line that says whether the process imported TensorFlow.
NOTING_TENSORFLOW = textwrap.dedent(
    """
    import atexit, runpy, sys

    atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules))
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


@pytest.mark.slow
def test_translation_trains_resumes_and_exports_on_jax(tmp_path):
    data = numbers_tsv(tmp_path / "train.tsv", 300)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"tsv:{data}", *TINY, "--checkpoint-every", "4"]
    first = subprocess.run(
        [sys.executable, "-c", NOTING_TENSORFLOW, str(ROOT / "train.py"), *args, "--steps", "8",
         "--no-export"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, **JAX},
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "jax backend" in first.stdout and "(examples packed into rows)" in first.stdout
    # Installed here, TensorFlow stays out of a JAX run that does not export (its import: 5 s).
    assert "tensorflow imported: False" in first.stdout
    # The training states (--average-last 5 keeps up to 5) beside the best weights on validation.
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == [
        "best.json", "best.npz", "ckpt-4.npz", "ckpt-8.npz"
    ]
    (output / "metrics.json").unlink()  # the run as a longer one would find it mid-way
    # As a run saved before packing existed: it goes on unpacked, as it began.
    config = json.loads((output / "config.json").read_text())
    del config["options"]["packing"]
    (output / "config.json").write_text(json.dumps(config))
    # --no-compile-ahead: a change a resumed run may make (the steps then compile as they come)
    result = train([*args, "--steps", "12", "--resume", "--no-compile-ahead"], env=JAX)
    assert "resuming from step 8" in result.stdout
    assert "batches take at most" in result.stdout and "packed" not in result.stdout
    assert json.loads((output / "config.json").read_text())["options"]["packing"] is False
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 12 and np.isfinite(metrics["loss"])
    # model.keras from JAX, exported by a TensorFlow-backend process.
    assert metrics["export"].endswith(os.path.join("export", "1"))
    assert (output / "export" / "1" / "saved_model.pb").exists()
    tags = event_tags(output / "logs" / "validation")
    assert "text" in tags["samples"] and "images" in tags["cross_attention"]
    assert any("hparams" in plugins for plugins in event_tags(output / "logs" / "train").values())


@pytest.mark.slow
def test_ctrl_c_on_jax_names_a_whole_checkpoint_and_resume_finishes(tmp_path):
    """Checkpoints are written in a background thread: the line Ctrl-C prints names one that is
    on disk whole, and --resume goes on from it."""
    import re

    from tests.training.test_run_folder import interrupt_once, start_training

    data = numbers_tsv(tmp_path / "train.tsv", 400)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"tsv:{data}", "--steps", "40",
            "--checkpoint-every", "5", "--no-export", *TINY]
    process = start_training(args, env=JAX)
    message = interrupt_once(process, (output / "checkpoints" / "ckpt-10.npz").exists)
    assert process.returncode == 130, message[-2000:]
    named = re.search(r"last checkpoint is step (\d+) \((.+\.npz)\)", message)
    assert named and "Traceback" not in message, message[-2000:]
    with np.load(named.group(2)) as checkpoint:  # whole: every array reads back
        assert all(np.isfinite(checkpoint[name]).all() for name in checkpoint.files)
    resumed = train([*args, "--resume"], env=JAX)
    planned = int(re.search(r"; (\d+) steps;", resumed.stdout).group(1))  # --steps or the epochs
    assert f"resuming from step {named.group(1)}" in resumed.stdout
    assert json.loads((output / "metrics.json").read_text())["steps"] == planned


@pytest.mark.slow
# The language model with a Transformer-XL memory: batches of three arrays (context, inputs,
# labels); vanilla segments take the same path with two.
@pytest.mark.parametrize(
    "task, extra",
    [
        ("tagging", ["--epochs", "1"]),
        ("lm", ["--steps", "6", "--set", "max_length=16", "--eval-examples", "4",
                "--set", "memory_length=8", "--set", "position=transformer_xl"]),
    ],
)
def test_the_other_tasks_train_on_jax(tmp_path, task, extra):
    output = tmp_path / "out"
    small = [a for a in TINY if a not in ("--eval-examples", "16")]
    train(["--output", str(output), "--task", task, *small, *extra, "--no-export"], env=JAX)
    metrics = json.loads((output / "metrics.json").read_text())
    assert np.isfinite(metrics["loss"])
    assert (output / "model.keras").exists()
    # The tagger packs its sentences into rows on JAX; the language model's segments are full.
    assert json.loads((output / "config.json").read_text())["packed"] is (task == "tagging")


def prepared_numbers(folder, pairs, shard_size):
    """`pairs` number pairs prepared into folder/set, 30 held out for validation."""
    from tfx_transformer.tasks.translation.prepare import PrepareOptions, prepare

    data = numbers_tsv(folder / "train.tsv", pairs)
    prepare(PrepareOptions(data=f"tsv:{data}", output=str(folder / "set"), shard_size=shard_size,
                           validation=30, vocab_size=150, processes=1))


@pytest.mark.slow
def test_a_run_without_tensorflow_trains_and_says_how_to_export(tmp_path):
    # A prepared corpus: its streaming reads the shards without TensorFlow too.
    prepared_numbers(tmp_path, pairs=300, shard_size=100)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(ROOT / "train.py"), "--output", str(output),
         "--data", f"prepared:{tmp_path / 'set'}", "--steps", "6", *TINY],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, **JAX},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "it needs TensorFlow" in result.stdout
    assert f"tfx_transformer.export --run {output}" in result.stdout
    assert not (output / "export").exists()
    for name in ("model.keras", "metrics.json", "checkpoints/ckpt-6.npz"):
        assert (output / name).exists(), name
    tags = event_tags(output / "logs" / "train")
    assert {"loss", "accuracy", "learning_rate"} <= set(tags)


DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras, jax
    from tfx_transformer.config import TransformerConfig
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training import jax_trainer
    from tfx_transformer.training.options import TrainOptions

    assert jax.local_device_count() == 2, jax.devices()
    config = TransformerConfig.preset("tiny", vocab_size=40, dropout=0.0)
    rng = np.random.default_rng(0)
    source = rng.integers(4, 40, size=(8, 8)).astype("int32")
    source[5:, 4:] = 0
    labels = rng.integers(4, 40, size=(8, 8)).astype("int32")
    labels[2:, 3:] = 0  # the two devices' halves hold different numbers of real tokens
    decoder_in = np.concatenate([np.full((8, 1), 2, "int32"), labels[:, :-1]], axis=1)
    decoder_in[labels == 0] = 0

    def after_two_steps(strategy):
        options = TrainOptions(output="{output}/" + strategy, strategy=strategy)
        placement = jax_trainer.setup(options)
        keras.utils.set_random_seed(0)
        # Plain SGD: the weight change is the gradient itself, so the comparison is well
        # conditioned (Adam's first step is about lr * sign(g), which float noise can flip).
        trainer = jax_trainer.Trainer(options, config, placement, RunPaths(options.output),
                                      optimizer=keras.optimizers.SGD(0.5))
        initial = [np.asarray(w) for w in trainer.model.get_weights()]
        losses = []
        for loss_sum, correct, tokens in trainer.steps([(source, decoder_in, labels)] * 2, 2, 0):
            losses.append(float(loss_sum) / float(tokens))
        trainer.sync()
        weights = [np.asarray(w) for w in trainer.model.get_weights()]
        assert any(np.abs(w - i).max() > 1e-3 for w, i in zip(weights, initial))
        return placement.replicas, losses, weights

    one, one_losses, one_weights = after_two_steps("default")
    two, two_losses, two_weights = after_two_steps("mirrored")
    assert (one, two) == (1, 2), (one, two)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    for a, b in zip(one_weights, two_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    print("ok")
    """
)


def run_on_two_cpu_devices(script, output):
    """`script` (its {output}: `output`) in a JAX process with two CPU devices; it prints ok."""
    result = subprocess.run(
        [sys.executable, "-c", script.replace("{output}", str(output))],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, **JAX, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_cpu_devices_train_as_one(tmp_path):
    run_on_two_cpu_devices(DATA_PARALLEL_SCRIPT, tmp_path)


COMPILE_AHEAD_SCRIPT = textwrap.dedent(
    """
    import threading
    import numpy as np, keras, jax
    from tfx_transformer.config import TransformerConfig
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training import jax_trainer
    from tfx_transformer.training.options import TrainOptions

    compiles, evaluation_compiles = [], []  # the thread of each compilation of the two steps
    def listener(event, duration, fun_name=None, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            found = {"jit(_train)": compiles, "jit(_evaluate)": evaluation_compiles}.get(fun_name)
            if found is not None:
                found.append(threading.current_thread().name)
    jax.monitoring.register_event_duration_secs_listener(listener)

    config = TransformerConfig.preset("tiny", vocab_size=40, dropout=0.0)
    rng = np.random.default_rng(0)

    def batch(width):
        source = rng.integers(4, 40, size=(4, width)).astype("int32")
        labels = rng.integers(4, 40, size=(4, width)).astype("int32")
        decoder_in = np.concatenate([np.full((4, 1), 2, "int32"), labels[:, :-1]], axis=1)
        return source, decoder_in, labels

    # Three shapes among five steps; the last batch's shape comes after the steps that run.
    batches = [batch(8), batch(16), batch(8), batch(24), batch(32)]
    validation = [batch(8), batch(40), batch(8)]  # two shapes, one of them not a step's

    def trainer_for(strategy, name):
        compiles.clear()
        evaluation_compiles.clear()
        options = TrainOptions(output="{output}/" + name, strategy=strategy)
        trainer = jax_trainer.Trainer(options, config, jax_trainer.setup(options), RunPaths(options.output))
        # No data read: the task's own evaluation compiles nothing (a run's does: tested below).
        trainer.task.lower_evaluation = lambda model, value_of, final: []
        return trainer

    # Without compiling ahead: once per shape, on this thread (the first step, on the variables'
    # own arrays, compiled once more before the state was committed to the device)
    trainer = trainer_for("default", "plain")
    for values in trainer.steps(batches, 4, 0):
        pass
    assert compiles == ["MainThread"] * 3, compiles

    for strategy in ("default", "mirrored"):  # one device; two, the batch split by rows
        trainer = trainer_for(strategy, strategy)
        trainer.compile_ahead(batches, 0, 4, validation)
        trainer.compile_ahead(batches, 1, 4, validation)  # shapes met already: nothing more
        trainer.compile_ahead((b for b in batches), 0, 5)  # a stream's shapes: not known ahead
        for loss_sum, correct, tokens in trainer.steps(batches, 4, 0):
            assert np.isfinite(float(loss_sum))
        # Each of the three shapes compiled once, on the compiling threads (the step would
        # compile on this thread what it did not find), none for the shape no step took (the
        # last batch's, also in the stream).
        assert len(compiles) == 3, (strategy, compiles)
        assert all(name.startswith("compile") for name in compiles), compiles
        trainer.sync()
        evaluate = trainer.make_eval_step()
        for _ in range(2):  # the evaluation's two shapes, also found after later steps
            for values in validation:
                assert np.isfinite(float(evaluate(*values)[0]))
            for values in trainer.steps(batches, 1, 0):
                pass
        assert len(evaluation_compiles) == 2, (strategy, evaluation_compiles)
        assert all(name.startswith("compile") for name in evaluation_compiles), evaluation_compiles
        assert len(compiles) == 3
    print("ok")
    """
)


@pytest.mark.slow
def test_the_steps_compile_ahead_once_per_shape_and_the_steps_find_them(tmp_path):
    run_on_two_cpu_devices(COMPILE_AHEAD_SCRIPT, tmp_path)


EVALUATION_AHEAD_SCRIPT = textwrap.dedent(
    """
    import json, math, threading
    import jax
    from tfx_transformer.tasks.lm.task import LanguageModelTask
    from tfx_transformer.tasks.tagging.task import TaggingTask
    from tfx_transformer.tasks.translation.task import TranslationTask
    from tfx_transformer.training import loop
    from tfx_transformer.training.cli import options_from_args

    phase = ["training"]
    main_thread = []  # (phase, function) of each compilation on the main thread
    compiling_threads = []
    def listener(event, duration, fun_name=None, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            if threading.current_thread().name == "MainThread":
                main_thread.append((phase[0], fun_name))
            else:
                compiling_threads.append(fun_name)
    jax.monitoring.register_event_duration_secs_listener(listener)

    def in_phase(function, name_of):
        def wrapped(self, *args, **kwargs):
            phase[0] = name_of(*args, **kwargs)
            try:
                return function(self, *args, **kwargs)
            finally:
                phase[0] = "training"
        return wrapped
    loop.Evaluator.measure = in_phase(loop.Evaluator.measure, lambda final: "end" if final else "evaluation")
    for task in (TranslationTask, TaggingTask, LanguageModelTask):
        task.test_metrics = in_phase(task.test_metrics, lambda model: "test")

    for name, args in {runs}.items():
        main_thread.clear()
        compiling_threads.clear()
        loop.run(options_from_args([*args, "--output", "{output}/" + name]))
        # What the evaluations compile (their steps; the greedy decoding that scores BLEU in
        # training and the end's beam search, the tagger's predictions, the language model's
        # scores per segment) compiled ahead, beside the steps, for the weights they are given,
        # and kept: not once more when an evaluation needs it.
        assert "jit(with_weights)" in compiling_threads, (name, compiling_threads)
        assert [f for p, f in main_thread if p == "evaluation"] == [], (name, main_thread)
        # The end's candidates (the best weights, the average of two checkpoints) are placed as
        # the trained state is: what was compiled in training serves them. (The language
        # model's test set is also scored with a sliding window, which compiles when it comes.)
        ended = [f for p, f in main_thread if p == "end" or (p == "test" and name != "lm")]
        assert {"jit(with_weights)", "jit(_evaluate)"}.isdisjoint(ended), (name, main_thread)
        with open("{output}/" + name + "/metrics.json") as file:
            assert math.isfinite(json.load(file)["loss"])
    print("ok")
    """
)


@pytest.mark.slow
def test_the_evaluations_compile_ahead_and_serve_the_end_candidates(tmp_path):
    """Translation on one device and on two (the batch split by rows); tagging and the
    language model on one."""
    data = numbers_tsv(tmp_path / "train.tsv", 300)
    common = ["--steps", "8", "--eval-every", "4", "--checkpoint-every", "4", "--average-last", "2",
              "--no-export", *TINY]
    runs = {
        "translation-one": ["--data", f"tsv:{data}", "--strategy", "default", *common],
        "translation-two": ["--data", f"tsv:{data}", "--strategy", "mirrored", *common],
        "tagging": ["--task", "tagging", "--strategy", "default", *common],
        "lm": ["--task", "lm", "--strategy", "default", "--set", "max_length=16", *common],
    }
    run_on_two_cpu_devices(EVALUATION_AHEAD_SCRIPT.replace("{runs}", repr(runs)), tmp_path)


@pytest.mark.slow
def test_jax_and_tensorflow_reach_close_losses(tmp_path):
    """Same seed, data and steps, dropout off, and the same batches: pairs packed into rows of
    max_length (64) tokens on both (TensorFlow's packed path runs here too). The initial weights
    differ (each backend draws them with its own generator), so the validation losses agree
    within a tolerance, not exactly: after 60 steps both have fallen well below the start
    (~ln 100) and lie within 10% of each other. Both in float32 (auto takes bf16 on TensorFlow
    on a CPU with native bf16), and one evaluation, at the end, so that both keep their last
    weights. XLA's optimization passes on, as in a user's run (conftest turns them off)."""
    data = numbers_tsv(tmp_path / "train.tsv", 400)
    args = ["--data", f"tsv:{data}", "--steps", "60", "--epochs", "20", *TINY, "--packing",
            "--set", "dropout=0", "--no-export", "--seed", "3", "--mixed-precision", "none",
            "--eval-every", "60"]
    train(["--output", str(tmp_path / "tf"), *args])
    optimized = {**JAX, "JAX_DISABLE_MOST_OPTIMIZATIONS": "0"}
    train(["--output", str(tmp_path / "jax"), *args], env=optimized)
    tf_loss, jax_loss = (
        json.loads((tmp_path / name / "metrics.json").read_text())["loss"] for name in ("tf", "jax")
    )
    assert tf_loss < 3.3 and jax_loss < 3.3, (tf_loss, jax_loss)
    assert abs(tf_loss - jax_loss) / tf_loss < 0.10, (tf_loss, jax_loss)


def train_in_two_processes(args, log_folder, name):
    """train.py as two JAX processes joined on the loopback (keras.distribution.initialize),
    each with one CPU device; both must exit cleanly. Returns their logs."""
    from tests.training.test_distribute import free_ports, wait_for_all

    address = f"127.0.0.1:{free_ports(1)[0]}"
    processes, logs = [], [log_folder / f"{name}-{index}.log" for index in range(2)]
    for index in range(2):
        env = {**os.environ, **JAX, "TF_CPP_MIN_LOG_LEVEL": "2",
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
        with open(logs[index], "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, str(ROOT / "train.py"), "--strategy", "multiworker", *args],
                stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env))
    wait_for_all(processes)
    texts = [log.read_text() for log in logs]
    for process, text in zip(processes, texts):
        assert process.returncode == 0, text[-4000:]
    return texts


@pytest.mark.slow
def test_two_jax_processes_train_evaluate_and_finish_as_two_devices_of_one(tmp_path):
    """Process 0 evaluates and saves on its own copy of the weights while process 1 waits; the
    run is the one a single process with two devices makes, to the last digit of its loss."""
    data = numbers_tsv(tmp_path / "train.tsv", 300)
    args = ["--data", f"tsv:{data}", "--steps", "8", "--eval-every", "4", *TINY, "--no-export",
            "--checkpoint-every", "4", "--average-last", "0"]
    logs = train_in_two_processes(["--output", str(tmp_path / "two"), *args], tmp_path, "two")
    assert "over 2 process(es)" in logs[0] and "done: 8 steps" in logs[0]
    assert "done:" not in logs[1]  # only process 0 finishes the run folder
    train(["--output", str(tmp_path / "one"), "--cpu-devices", "2", *args], env=JAX)
    two, one = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("two", "one"))
    for key in ("loss", "accuracy", "chrf"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    for name in ("model.keras", "checkpoints/ckpt-8.npz", "checkpoints/best.npz"):
        assert (tmp_path / "two" / name).exists(), name


@pytest.mark.slow
def test_two_jax_processes_stream_their_own_shards_and_resume(tmp_path):
    prepared_numbers(tmp_path, pairs=1200, shard_size=200)
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"prepared:{tmp_path / 'set'}", *TINY,
            "--no-export", "--checkpoint-every", "5", "--stream-window", "150", "--average-last", "0"]
    first = train_in_two_processes([*args, "--steps", "10"], tmp_path, "first")
    # One batch from each process a step, of its devices' rows.
    assert "steps x 2 batch(es))" in first[0]
    anchors = sorted(n for n in os.listdir(output / "checkpoints") if n.startswith("stream-"))
    assert [n.rsplit("-", 3)[1:] for n in anchors] == [["worker0", "of", "2.json"],
                                                      ["worker1", "of", "2.json"]]
    (output / "metrics.json").unlink()  # as if stopped before the end
    second = train_in_two_processes([*args, "--steps", "16", "--resume"], tmp_path, "second")
    assert all("resuming from step 10" in log for log in second)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 16 and np.isfinite(metrics["loss"])
    # Process 0 reports what the shape agreement left out of its batches since the resume.
    assert 0 <= metrics["stream_batches_left_out"] < metrics["stream_batches_made"]
    assert "shape agreement: " in second[0]


def test_multiworker_without_a_cluster_says_what_to_set(tmp_path):
    result = train(["--output", str(tmp_path / "out"), "--strategy", "multiworker", "--steps", "1",
                    *TINY], env=JAX, check=False)
    assert result.returncode == 2
    assert "KERAS_DISTRIBUTION_JOB_ADDRESSES" in result.stderr
    assert not (tmp_path / "out").exists()
