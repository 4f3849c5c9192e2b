import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The JAX processes the tests start run a few steps of tiny models, where XLA's optimization
# passes cost more than they save: without them the JAX tests took 175 s instead of 235 s on the
# development machine. Compiled code computes the same, by another schedule;
# test_jax_and_tensorflow_reach_close_losses keeps the passes on, as a user's run has them.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_float32():
    """Every test starts from the same seed and the float32 policy, whatever ran before it."""
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def number_words(count, offset=0):
    from num2words import num2words

    return [(num2words(n), num2words(n, lang="fr")) for n in range(offset, offset + count)]


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory):
    """A training run's folder (tokenizer, untrained tiny model) and its export, version 1.

    The model is not trained: the export tests compare the SavedModel with the Python side,
    which holds for any weights; max_length 12 keeps the untrained model's outputs short.
    """
    import tfx_transformer as tt
    from tfx_transformer.export import export_run
    from tfx_transformer.data import Tokenizer

    run = tmp_path_factory.mktemp("exported") / "run"
    pairs = number_words(300)
    tokenizer = Tokenizer.train([s for p in pairs for s in p])
    tokenizer.save(run / "tokenizer")
    keras.utils.set_random_seed(5)
    config = tt.TransformerConfig.preset(
        "tiny", vocab_size=tokenizer.vocab_size, num_encoder_layers=1, num_decoder_layers=1,
        max_length=24,
    )
    model = tt.Transformer(config)
    model.save(run / "model.keras")
    # What a training run writes: the export reads the task from it.
    (run / "config.json").write_text(json.dumps({"options": {"task": "translation"}, "model": config.to_dict()}))
    version = export_run(str(run), beam_size=4, length_penalty=0.6, max_length=12)
    return {"run": run, "version": version, "model": model, "tokenizer": tokenizer, "max_length": 12}
