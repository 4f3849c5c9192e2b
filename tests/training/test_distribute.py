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
