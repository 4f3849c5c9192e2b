"""The Universal Transformer with ACT through `python train.py` on the algorithmic task: test
scores per length band, ponder summaries, and an export that answers text as Python does."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.training.test_training import ROOT, TINY, event_tags, train
from tfx_transformer.tasks.translation.translator import Translator

UNIVERSAL = ["--set", "universal_steps=3", "--set", "adaptive_computation=true"]


@pytest.mark.slow
def test_universal_act_trains_on_the_algorithmic_task_and_exports(tmp_path):
    output = tmp_path / "out"
    result = train([
        "--output", str(output), "--data", "builtin:algorithmic:reverse", *TINY, *UNIVERSAL,
        "--steps", "8", "--beam-size", "2",
    ])
    assert "test exact match by input length: 21-40" in result.stdout
    # Symbols are right or wrong: the best weights are chosen by exact match, not BLEU.
    assert json.loads((output / "checkpoints" / "best.json").read_text())["metric"] == "exact_match"
    metrics = json.loads((output / "metrics.json").read_text())
    bands = metrics["test_exact_match_by_length"]
    assert list(bands) == ["21-40", "41-60"] and all(0.0 <= v <= 1.0 for v in bands.values())
    config = json.loads((output / "config.json").read_text())["model"]
    assert config["universal_steps"] == 3 and config["adaptive_computation"] is True

    tags = event_tags(output / "logs" / "validation")
    for side in ("encoder", "decoder"):
        assert "scalars" in tags[f"ponder/{side}_mean_steps"]
        assert "histograms" in tags[f"ponder/{side}_steps"]

    texts = ["1 2 3", "9 8 7 6 5 4", "4"]
    python_side = Translator.from_run(str(output), beam_size=2, length_penalty=0.6).translate(texts)
    import tensorflow_text  # noqa: F401  (the SentencePiece ops the export holds)

    serve = tf.saved_model.load(str(output / "export" / "1")).signatures["serving_default"]
    served = [t.decode("utf-8") for t in serve(text=tf.constant(texts))["translation"].numpy()]
    assert served == python_side
    assert np.all(np.isfinite(serve(text=tf.constant(texts))["score"].numpy()))


PONDER_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras, numpy as np
    from tfx_transformer.config import TransformerConfig
    from tfx_transformer.runs import RunPaths
    from tfx_transformer.training.options import TrainOptions

    rng = np.random.default_rng(0)
    source = rng.integers(4, 40, size=(8, 7)).astype("int32")
    source[5:, 4:] = 0
    labels = rng.integers(4, 40, size=(8, 6)).astype("int32")
    labels[2:, 3:] = 0
    decoder_in = np.concatenate([np.full((8, 1), 2, "int32"), labels[:, :-1]], axis=1)
    decoder_in[labels == 0] = 0
    inputs = {"source_ids": source, "target_ids": decoder_in}

    def ponder_after_training(tau):
        config = TransformerConfig.preset("tiny", vocab_size=40, dropout=0.0, universal_steps=6,
                                          adaptive_computation=True, ponder_cost=tau)
        options = TrainOptions(output=f"{sys.argv[1]}/{tau}", checkpoint_every=1000)
        keras.utils.set_random_seed(0)
        sgd = keras.optimizers.SGD(0.5)
        if keras.backend.backend() == "jax":
            from tfx_transformer.training import jax_trainer
            trainer = jax_trainer.Trainer(options, config, jax_trainer.setup(options),
                                          RunPaths(options.output), optimizer=sgd)
        else:
            import tensorflow as tf
            from tfx_transformer.training.trainer import Trainer
            trainer = Trainer(options, config, tf.distribute.get_strategy(), RunPaths(options.output))
            trainer.optimizer = sgd
            sgd.build(trainer.model.trainable_variables)
        for _ in trainer.steps([(source, decoder_in, labels)] * 20, 20, 0):
            pass
        trainer.sync()
        steps = trainer.model.ponder_steps(inputs)
        return float(np.asarray(steps["encoder"])[source != 0].mean())

    free, taxed = ponder_after_training(0.0), ponder_after_training(1.0)
    print("ponder steps without and with the ponder cost:", free, taxed)
    assert taxed < free - 0.3, (free, taxed)
    print("ok")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_training_engines_minimize_the_ponder_cost(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = subprocess.run(
        [sys.executable, "-c", PONDER_SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
