"""tf.distribute: a mirrored step equals the single-device step; two workers train together.

TensorFlow fixes its devices and cluster at start-up, so each case runs in its own process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.training.test_training import ROOT, TINY, numbers_tsv

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    from tfx_transformer.training import distribute
    distribute.split_cpu(2)
    from tfx_transformer.config import TransformerConfig
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training.distribute import distributed_batches
    from tfx_transformer.training.options import TrainOptions
    from tfx_transformer.training.trainer import Trainer

    options = TrainOptions(output="{output}", checkpoint_every=1000)
    config = TransformerConfig.preset("tiny", vocab_size=40, dropout=0.0)
    rng = np.random.default_rng(0)
    source = rng.integers(4, 40, size=(8, 7)).astype("int32")
    source[5:, 4:] = 0
    labels = rng.integers(4, 40, size=(8, 6)).astype("int32")
    labels[2:, 3:] = 0  # the two halves hold different numbers of real tokens
    decoder_in = np.concatenate([np.full((8, 1), 2, "int32"), labels[:, :-1]], axis=1)
    decoder_in[labels == 0] = 0

    def one_step(strategy, batches, weights):
        trainer = Trainer(options, config, strategy, RunPaths("{output}/" + str(len(batches))))
        if weights is not None:
            trainer.model.set_weights(weights)
        # Plain SGD: the weight change is the gradient itself, so the comparison is well
        # conditioned (Adam's first step is about lr * sign(g), which float noise can flip).
        with strategy.scope():
            trainer.optimizer = keras.optimizers.SGD(1.0)
            trainer.optimizer.build(trainer.model.trainable_variables)
        step = trainer.make_train_step()
        iterator = iter(distributed_batches(strategy, batches, 1, 0, 3))
        loss_sum, correct, tokens = step(iterator)
        return trainer.model.get_weights(), float(loss_sum) / float(tokens)

    default = tf.distribute.get_strategy()
    mirrored = distribute.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
    keras.utils.set_random_seed(0)
    initial = Trainer(options, config, default, RunPaths("{output}/init")).model.get_weights()
    whole = [(source, decoder_in, labels)]
    halves = [(source[:4], decoder_in[:4], labels[:4]), (source[4:], decoder_in[4:], labels[4:])]
    single_weights, single_loss = one_step(default, whole, initial)
    mirrored_weights, mirrored_loss = one_step(mirrored, halves, initial)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    changed = 0
    for a, b, before in zip(single_weights, mirrored_weights, initial):
        np.testing.assert_allclose(b - before, a - before, rtol=1e-4, atol=1e-6)
        changed += int(not np.allclose(a, before))
    assert changed > len(initial) // 2, changed
    print("mirrored ok", single_loss)
    """
)


def run_python(code, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


@pytest.mark.slow
def test_mirrored_step_over_two_cpus_matches_the_default_strategy(tmp_path):
    result = run_python(MIRRORED_SCRIPT.replace("{output}", str(tmp_path)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "mirrored ok" in result.stdout


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for_all(processes, timeout=400):
    """Waits for every process to end; kills them all if one is still running at `timeout`."""
    try:
        for process in processes:
            process.wait(timeout=timeout)
    finally:
        for process in processes:
            process.kill()


@pytest.mark.slow
def test_two_workers_train_together_and_both_finish(tmp_path):
    data = numbers_tsv(tmp_path / "train.tsv", 300)
    output = tmp_path / "out"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "train.py"), "--output", str(output), "--data",
                 f"tsv:{data}", "--steps", "6", *TINY, "--no-export"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)},
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=400)[0])
    finally:
        for process in processes:
            process.kill()
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    assert "MultiWorkerMirroredStrategy" in outputs[0]
    assert "2 replica(s)" in outputs[0]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 6
    assert "done: 6 steps" in outputs[0] and "done:" not in outputs[1]


def start_workers(args, count, ports, log_folder, round_name):
    """`count` train.py workers of one cluster on the loopback, their output to files."""
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(count):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(log_folder / f"{round_name}-{index}.log", "w")
        processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args], stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)},
        ))
    return processes


@pytest.mark.slow
def test_a_lost_worker_and_the_restarted_job_resumes_to_the_same_total_steps(tmp_path):
    """Worker 1 of 2 is killed mid-training, then the chief, as a cluster manager stops the
    rest of a failed job; both restart with --resume (what `training.cluster run` adds) and
    reach the planned steps from the last checkpoint, every kept checkpoint readable. The data
    is a prepared corpus: each worker streams its own shards and resumes in its stream."""
    import time

    import tensorflow as tf

    from tfx_transformer.tasks.translation.prepare import PrepareOptions, prepare

    corpus = numbers_tsv(tmp_path / "train.tsv", 400)
    prepare(PrepareOptions(data=f"tsv:{corpus}", output=str(tmp_path / "set"), shard_size=100,
                           validation=30, vocab_size=150, processes=1))
    output = tmp_path / "out"
    args = ["--output", str(output), "--data", f"prepared:{tmp_path / 'set'}", "--steps", "24",
            "--checkpoint-every", "4", *TINY, "--no-export", "--average-last", "0",
            "--eval-every", "100", "--stream-window", "50"]
    ports = free_ports(2)
    first = start_workers(args, 2, ports, tmp_path, "first")
    try:
        deadline = time.time() + 300
        while not (output / "checkpoints" / "ckpt-8.index").exists():
            assert time.time() < deadline and all(p.poll() is None for p in first), (
                (tmp_path / "first-0.log").read_text()[-3000:])
            time.sleep(0.2)
        first[1].kill()
        # The chief notices its lost peer within seconds (heartbeats) and fails by itself,
        # unless the cluster manager stopping the job kills it first (its lock then stays
        # behind, for the restarted chief's --resume to take over).
        time.sleep(1.0)
        first[0].kill()
    finally:
        for process in first:
            process.kill()
            process.wait()
    assert not (output / "metrics.json").exists()
    restarted = start_workers(args + ["--resume"], 2, free_ports(2), tmp_path, "second")
    wait_for_all(restarted)
    chief_log = (tmp_path / "second-0.log").read_text()
    assert [p.returncode for p in restarted] == [0, 0], (
        chief_log[-3000:] + (tmp_path / "second-1.log").read_text()[-3000:])
    resumed_at = int(chief_log.split("resuming from step ")[1].split()[0])
    assert resumed_at >= 8 and resumed_at % 4 == 0
    assert json.loads((output / "metrics.json").read_text())["steps"] == 24
    for path in tf.train.get_checkpoint_state(str(output / "checkpoints")).all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        assert reader.get_variable_to_shape_map()
    assert int(tf.train.latest_checkpoint(str(output / "checkpoints")).rsplit("-", 1)[1]) == 24
