"""Fused attention on JAX: a mask of right padding (and causality) is recognised on the device
and runs as key lengths, any other mask as the mask; both equal the written-out attention, in
values and gradients, for the layer and for a whole Transformer, also with its rows split over
two devices. The lengths form runs on XLA here (cuDNN's needs a GPU); the kernel is the only
difference there. Where cuDNN refuses the lengths form, the mask form runs."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

JAX_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras, jax
    assert keras.backend.backend() == "jax"
    import tfx_transformer as tt
    from tfx_transformer.layers import attention, fused_attention as fused
    from tfx_transformer.layers.attention import MultiHeadAttention, masked_softmax

    rng = np.random.default_rng(0)
    B, T, h, d = 3, 6, 2, 4
    q, k, v = (rng.normal(size=(B, T, h, d)).astype("float32") for _ in range(3))
    lengths = np.array([6, 3, 1])
    right = (np.arange(T)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
    causal = np.tril(np.ones((T, T), bool))[None]  # (1, T, T)
    left = right[:, :, ::-1].copy()

    def structure(mask, query_length=T):
        lengths, is_causal, holds = fused.padding_structure(mask, query_length, T)
        return np.asarray(lengths).tolist(), is_causal, bool(holds)

    assert structure(right) == ([6, 3, 1], False, True)
    assert structure(right & causal) == ([6, 3, 1], True, True)
    assert structure(causal) == ([6], True, True)  # causal alone: one row for the whole batch
    assert structure(left)[2] is False and structure(left & causal)[2] is False
    assert structure(right & ~causal)[2] is False  # anti-causal: not the causal form
    no_keys = right.copy()
    no_keys[2] = False
    assert structure(no_keys)[2] is False  # cuDNN's row of no keys is not the mask form's
    gappy = right.copy()
    gappy[0, 0, 2] = False
    assert structure(gappy)[2] is False
    assert fused.padding_structure(np.ones((B, 4, T), bool), 4, T) is None  # not square
    assert fused.padding_structure(np.ones((B, T), bool), T, T) is None  # not [B, T, S]

    def reference(q, k, v, mask):
        scores = jax.numpy.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
        weights = masked_softmax(scores, mask[:, None])
        return jax.numpy.einsum("bhts,bshd->bthd", weights, v)

    for mask in (right, right & causal, causal, left, left & causal, no_keys, gappy):
        def ours(q, k, v, mask=mask):
            return fused.fused_attention(q, k, v, mask, 1 / np.sqrt(d), "xla")
        def loss(f, mask=mask):
            return lambda q, k, v: (f(q, k, v) * v.sum(-1, keepdims=True) ** 2).sum()
        mine, theirs = jax.jit(ours)(q, k, v), reference(q, k, v, mask)
        if mask is no_keys:  # the empty row is garbage on both sides; the others must agree
            mine, theirs = mine[:2], theirs[:2]
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-5)
        if mask is not no_keys:
            grads = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(q, k, v)
            reference_grads = jax.grad(loss(lambda q, k, v: reference(q, k, v, mask)),
                                       argnums=(0, 1, 2))(q, k, v)
            for mine, theirs in zip(grads, reference_grads):
                np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-4)

    # Off a GPU cuDNN is not asked for: the mask form runs, as before. Asked for anyway, it is
    # refused as JAX traces it, and the mask form runs instead, saying so once.
    assert fused.cudnn_implementation(q, k, v) is None
    refused = jax.jit(lambda q, k, v: fused.fused_attention(q, k, v, right, 0.5, "cudnn"))(q, k, v)
    np.testing.assert_allclose(
        np.asarray(refused), np.asarray(fused.masked_attention(q, k, v, right, 0.5)), atol=1e-6)
    assert len(fused._refusals_logged) == 1

    # A whole Transformer, padded sources and targets: the lengths form (run by XLA) gives the
    # unfused model's logits and gradients; so does a left-padded batch (the mask form).
    attention.cudnn_implementation = lambda *operands: "xla"
    model = tt.Transformer(tt.TransformerConfig.preset("tiny", vocab_size=50, dropout=0.0))
    source = rng.integers(4, 50, size=(3, 7))
    source[1, 4:] = 0
    target = rng.integers(4, 50, size=(3, 5))
    target[2, 2:] = 0

    def gradients(inputs):
        def loss(values):
            logits, _ = model.stateless_call(
                values, [w.value for w in model.non_trainable_variables], inputs, training=True)
            return (logits ** 2).mean()
        values = [w.value for w in model.trainable_variables]
        return jax.jit(jax.value_and_grad(loss))(values)

    def assert_same_step(first, second):
        (first_loss, first_grads), (second_loss, second_grads) = first, second
        np.testing.assert_allclose(float(first_loss), float(second_loss), rtol=1e-5)
        for mine, theirs in zip(first_grads, second_grads):
            np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-4, atol=1e-6)

    for inputs in ({"source_ids": source, "target_ids": target},
                   {"source_ids": source[:, ::-1].copy(), "target_ids": target}):
        MultiHeadAttention.fuse_attention = False
        plain = gradients(inputs)
        MultiHeadAttention.fuse_attention = True
        assert_same_step(gradients(inputs), plain)

    # Rows split over two devices (data parallelism): the check reduces over the whole batch,
    # and the step gives what one device gives.
    assert len(jax.devices()) == 2
    rows = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(jax.devices()), ("batch",)), jax.sharding.PartitionSpec("batch"))
    inputs = {"source_ids": np.concatenate([source, source[:1]]),
              "target_ids": np.concatenate([target, target[:1]])}
    assert_same_step(gradients(jax.device_put(inputs, rows)), gradients(inputs))
    print("ok")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_padding_as_lengths_equals_the_mask_in_values_and_gradients():
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
