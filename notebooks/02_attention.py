# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Transformer, part 2: attention
#
# Questions 6 and 7: traditional attention scores, then self-attention and its 1/sqrt(d_k) scale.
# (Multi-head attention maps of a trained model are in notebook 5, question 10.)

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import matplotlib.pyplot as plt
import numpy as np
from keras import ops

import tfx_transformer as tt

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 6. Traditional attention
# 传统 attention
#
# Attention scores a query against each key, turns the scores into weights with a softmax, and
# returns the weighted sum of the values. The score function is the choice:
#
# - dot product: q . k
# - cosine: q . k / (|q| |k|)
# - additive (Bahdanau): v^T tanh(W_q q + W_k k)
#
# `tt.layers.Attention(score=...)` has each; here they score the same query against the same keys.

# %%
query = rng.normal(size=(1, 1, 4)).astype("float32")
keys = rng.normal(size=(1, 5, 4)).astype("float32")
values = np.eye(5, dtype="float32")[None]  # value i is the i-th unit vector: output = weights
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
for axis, score in zip(axes, ["dot", "cosine", "additive"]):
    layer = tt.layers.Attention(score=score)
    output, weights = layer(query, keys, values, return_attention_scores=True)
    raw = ops.convert_to_numpy(layer.compute_scores(query, keys))[0, 0]
    weights = ops.convert_to_numpy(weights)[0, 0]
    np.testing.assert_allclose(ops.convert_to_numpy(output)[0, 0], weights, atol=1e-6)
    axis.bar(range(5), weights, color="tab:blue", label="softmax weight")
    axis.plot(range(5), raw, "o-", color="tab:orange", label="raw score")
    axis.set_title(score)
    axis.set_xlabel("key")
    print(f"{score:>8}: scores {np.round(raw, 2)} -> weights {np.round(weights, 2)}")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# Cosine scores live in [-1, 1], so their softmax stays close to uniform; dot products are
# unbounded, so their softmax can be sharp. The additive score learns its own scale.

# %% [markdown]
# ## 7. Self-attention, Q/K/V and the 1/sqrt(d_k) scale
# self-attention 长怎么样
#
# In self-attention the queries, keys and values all come from the same sequence, through three
# learned projections W_Q, W_K, W_V. With components of unit variance, q . k has variance d_k:
# the larger the head, the larger the scores, and the softmax saturates (one weight near 1, the
# gradients of the others near 0). Dividing by sqrt(d_k) keeps the variance at 1.

# %%
sizes = [4, 16, 64, 256, 1024]
unscaled_max, scaled_max = [], []
for d_k in sizes:
    q = rng.normal(size=(200, 1, d_k)).astype("float32")
    k = rng.normal(size=(200, 10, d_k)).astype("float32")
    _, dot = tt.layers.Attention(score="dot")(q, k, k, return_attention_scores=True)
    _, scaled = tt.layers.Attention(score="scaled_dot")(q, k, k, return_attention_scores=True)
    unscaled_max.append(float(np.mean(np.max(ops.convert_to_numpy(dot), axis=-1))))
    scaled_max.append(float(np.mean(np.max(ops.convert_to_numpy(scaled), axis=-1))))
for d_k, u, s in zip(sizes, unscaled_max, scaled_max):
    print(f"d_k={d_k:5d}: largest weight of 10 keys, unscaled {u:.3f}, scaled {s:.3f}")
assert unscaled_max[-1] > 0.9 and scaled_max[-1] < 0.6  # computed above, not typed
plt.figure(figsize=(5, 3))
plt.semilogx(sizes, unscaled_max, "o-", label="q.k (saturates)")
plt.semilogx(sizes, scaled_max, "o-", label="q.k / sqrt(d_k)")
plt.axhline(0.1, color="gray", linestyle=":", label="uniform over 10 keys")
plt.xlabel("d_k")
plt.ylabel("mean largest softmax weight")
plt.legend()
plt.tight_layout()
plt.show()
