"""The layers, the model and decoding run on the JAX backend (the GPU benchmarks use it).

Keras fixes its backend at import, so the JAX side runs in a subprocess. It also loads a `.keras`
file written here by the TensorFlow backend and must reproduce its logits.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfx_transformer as tt
from tests import benchmark_module

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"
)

JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, keras, jax
    from keras import ops
    assert keras.backend.backend() == "jax"
    import tfx_transformer as tt
    from tfx_transformer import layers as L

    folder = sys.argv[1]
    data = np.load(f"{folder}/inputs.npz")
    inputs = {"source_ids": data["source_ids"], "target_ids": data["target_ids"]}

    # A model written by the TensorFlow backend gives the same logits here.
    model = keras.models.load_model(f"{folder}/model.keras")
    logits = np.asarray(model(inputs))
    np.testing.assert_allclose(logits, data["logits"], rtol=1e-4, atol=1e-4)

    # Fused attention (keras.ops.dot_product_attention, the default here) equals the written-out
    # one: logits with padding and the causal mask, and gradients while training.
    from tfx_transformer.layers.attention import MultiHeadAttention
    MultiHeadAttention.fuse_attention = False
    np.testing.assert_allclose(np.asarray(model(inputs)), logits, rtol=1e-5, atol=1e-5)
    plain = tt.Transformer(tt.TransformerConfig.preset("tiny", vocab_size=50, dropout=0.0))
    plain(inputs)

    def gradients():
        values = [v.value for v in plain.trainable_variables]
        def loss(values):
            logits, _ = plain.stateless_call(
                values, [v.value for v in plain.non_trainable_variables], inputs, training=True)
            return (logits ** 2).mean()
        return jax.grad(loss)(values)

    unfused_gradients = gradients()
    MultiHeadAttention.fuse_attention = True
    for fused, unfused in zip(gradients(), unfused_gradients):
        np.testing.assert_allclose(np.asarray(fused), np.asarray(unfused), rtol=1e-4, atol=1e-6)

    # Masks: later target tokens do not change earlier logits.
    changed = dict(inputs, target_ids=inputs["target_ids"].copy())
    changed["target_ids"][:, 3:] = 7
    np.testing.assert_allclose(np.asarray(model(changed))[:, :3], logits[:, :3], atol=1e-5)

    # Cached decoding equals recomputation, beam 1 equals greedy, also under jax.jit.
    src = inputs["source_ids"]
    greedy = np.asarray(tt.greedy_decode(model, src, max_length=8)[0])
    full = np.asarray(tt.greedy_decode(model, src, max_length=8, use_cache=False)[0])
    np.testing.assert_array_equal(greedy, full)
    beam1 = np.asarray(tt.beam_search(model, src, beam_size=1, length_penalty=0.0, max_length=8)[0])
    np.testing.assert_array_equal(beam1, greedy)
    beam = tt.beam_search(model, src, beam_size=3, max_length=8)
    beam_full = tt.beam_search(model, src, beam_size=3, max_length=8, use_cache=False)
    np.testing.assert_array_equal(np.asarray(beam[0]), np.asarray(beam_full[0]))
    jitted = jax.jit(lambda ids: tt.beam_search(model, ids, beam_size=3, max_length=8))
    np.testing.assert_array_equal(np.asarray(jitted(src)[0]), np.asarray(beam[0]))
    np.testing.assert_array_equal(np.asarray(data["tf_beam"]), np.asarray(beam[0]))
    # Sampling is stateless: the same seed gives the same samples under jax.jit, n-best too.
    sampled = np.asarray(tt.sample_decode(model, src, top_p=0.9, seed=2, max_length=8)[0])
    jitted = jax.jit(lambda ids: tt.sample_decode(model, ids, top_p=0.9, seed=2, max_length=8))
    np.testing.assert_array_equal(np.asarray(jitted(src)[0]), sampled)
    nbest = jax.jit(lambda ids: tt.beam_search_nbest(model, ids, 3, max_length=8))(src)[0]
    np.testing.assert_array_equal(np.asarray(nbest)[:, 0], np.asarray(beam[0]))

    # Every layer runs, and a training step lowers the loss.
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    for score in L.SCORE_FUNCTIONS:
        L.MultiHeadAttention(2, score=score)(x)
    L.Encoder(2, d_model=8, num_heads=2, d_ff=16, norm_first=True)(x)
    L.Decoder(2, d_model=8, num_heads=2, d_ff=16)(x, x)
    for kind in ("shaw", "tener"):  # relative attention, cached and jitted too
        relative = tt.Transformer(
            tt.TransformerConfig.preset("tiny", vocab_size=50, num_encoder_layers=1, position=kind)
        )
        cached = jax.jit(lambda ids: tt.greedy_decode(relative, ids, max_length=8))(src)[0]
        full = tt.greedy_decode(relative, src, max_length=8, use_cache=False)[0]
        np.testing.assert_array_equal(np.asarray(cached), np.asarray(full))
    # The Universal Transformer with ACT: cached decoding under jit equals recomputation, and
    # stateless_call returns its ponder cost for a training step to add.
    universal = tt.Transformer(tt.TransformerConfig.preset(
        "tiny", vocab_size=50, universal_steps=4, adaptive_computation=True, dropout=0.0))
    cached = jax.jit(lambda ids: tt.beam_search(universal, ids, beam_size=2, max_length=8))(src)[0]
    full = tt.beam_search(universal, src, beam_size=2, max_length=8, use_cache=False)[0]
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(full))
    _, _, ponder_losses = universal.stateless_call(
        [v.value for v in universal.trainable_variables],
        [v.value for v in universal.non_trainable_variables],
        inputs, training=True, return_losses=True)
    assert len(ponder_losses) == 2 and all(0.01 <= float(loss) <= 0.05 for loss in ponder_losses)
    tagger = tt.TransformerTagger(
        tt.TransformerConfig.preset("tiny", vocab_size=50, num_encoder_layers=1, position="tener"),
        num_tags=5,
    )
    tags = np.asarray(jax.jit(tagger.predict_tags)(src))
    assert ((tags > 0) == (src > 0)).all()
    lm = tt.TransformerLM(tt.TransformerConfig.preset(
        "tiny", vocab_size=50, max_length=8, position="transformer_xl", memory_length=8))
    stream = np.random.default_rng(1).integers(4, 50, size=(2, 16))
    step = jax.jit(lambda ids, memory: lm.step(ids, memory))
    first, memory = step(stream[:, :8], lm.empty_memory(2))
    second, _ = step(stream[:, 8:], memory)
    np.testing.assert_allclose(np.asarray(second), np.asarray(lm(stream))[:, 8:], atol=1e-4)
    linformer = L.LinformerAttention(2, max_length=8, projected_length=3)
    assert linformer(x, attention_mask=np.ones((2, 1, 5), bool)).shape == x.shape
    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = tt.Transformer(tt.TransformerConfig.preset("tiny", vocab_size=50))
    assert str(mixed(inputs).dtype) == "float32"
    keras.config.set_dtype_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))
    history = model.fit(inputs, inputs["target_ids"], epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    print("jax backend ok")
    """
)


@pytest.mark.slow
def test_model_runs_and_decodes_on_jax(tmp_path, rng):
    config = tt.TransformerConfig.preset("tiny", vocab_size=50, num_encoder_layers=1)
    model = tt.Transformer(config)
    source = rng.integers(4, 50, size=(3, 6))
    source[1, 4:] = 0
    target = rng.integers(4, 50, size=(3, 5))
    logits = keras.ops.convert_to_numpy(model({"source_ids": source, "target_ids": target}))
    tf_beam = keras.ops.convert_to_numpy(tt.beam_search(model, source, beam_size=3, max_length=8)[0])
    model.save(tmp_path / "model.keras")
    np.savez(
        tmp_path / "inputs.npz", source_ids=source, target_ids=target, logits=logits, tf_beam=tf_beam
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "jax backend ok" in result.stdout


NO_TENSORFLOW = textwrap.dedent(
    """
    import runpy, sys

    class NoTensorFlow:  # the accelerator machine has JAX, Keras and keras-hub but no TensorFlow
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_text"):
                raise ImportError(f"{name} is not installed here")

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = sys.argv[1:]
    sys.path.insert(0, "benchmarks")
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


@pytest.mark.slow
def test_gpu_benchmark_runs_on_jax_without_tensorflow():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    arguments = ["--preset", "tiny", "--vocab", "300", "--batch", "4", "--length", "8",
                 "--rounds", "1", "--steps", "2", "--padding", "0.2"]
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, "benchmarks/gpu_train_step.py", *arguments],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if "first loss" in line]
    assert len(losses) == 5 and all(4.0 < loss < 8.0 for loss in losses)  # near ln(300) = 5.7
    ratio = [line for line in result.stdout.splitlines() if line.startswith("ours / keras-hub:")]
    assert ratio and float(ratio[0].split()[-1].rstrip("x")) > 0
    assert any(line.startswith("padding: ") and line != "padding: 0.0% of the positions"
               for line in result.stdout.splitlines())
    for name in ("ours-paper", "ours-paper-mask", "ours-paper-packed"):
        assert any(line.startswith(f"{name} / keras-hub:") for line in result.stdout.splitlines())
    packed = [line for line in result.stdout.splitlines() if line.startswith("packed rows: ")]
    assert packed and float(packed[0].split()[2].rstrip("%")) < 15  # fuller than --padding 0.2
    # benchmarks/accelerator.py reads the table this prints
    accelerator = benchmark_module("accelerator")
    rates = accelerator.step_rates(result.stdout)
    assert set(rates) == {"ours", "ours-paper", "ours-paper-mask", "ours-paper-packed", "keras-hub"}
    assert all(rate["tokens_per_sec"] > 0 and rate["ms_per_step"] > 0 for rate in rates.values())
