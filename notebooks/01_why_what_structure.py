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
# # The Transformer, part 1: why, what, and its overall structure
#
# Questions 1 to 3 of the classic list, answered with `tfx_transformer`'s own code.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

import tfx_transformer as tt

keras.utils.set_random_seed(0)

# %% [markdown]
# ## 1. Why the Transformer?
# 为什么要有 Transformer?
#
# Before it, sequence models had three weaknesses:
#
# - **An RNN cannot parallelize over time**: step t needs the hidden state of step t-1, so a
#   sequence of n tokens costs n sequential steps (notebook 4, question 9, times it).
# - **A CNN needs depth for long range**: a kernel of width k links tokens k apart, so two tokens
#   n apart meet only after about n/k layers (question 8 plots it).
# - **Traditional attention ignores dependencies within the source or target**: encoder-decoder
#   attention (Bahdanau, Luong) links target to source, but each side is still encoded by an RNN.
#
# Self-attention links every pair of positions in one step, in parallel. Below, one
# self-attention layer relates all 6 positions at once: its weight matrix is 6 x 6.

# %%
attention = tt.layers.MultiHeadAttention(num_heads=2, d_model=8)
x = np.random.default_rng(0).normal(size=(1, 6, 8)).astype("float32")
_, weights = attention(x, return_attention_scores=True)
print("attention weights per head:", tuple(weights.shape), "-> every position sees every other")

# %% [markdown]
# ## 2. What does it do?
# Transformer 作用是什么?
#
# It maps a sequence to a sequence: the encoder reads the source tokens, the decoder writes the
# target one token at a time, each step a distribution over the vocabulary. The paper used it for
# machine translation; here a model of the `tiny` preset maps source ids [B, S] and the shifted
# target ids [B, T] to logits [B, T, V].

# %%
config = tt.TransformerConfig.preset("tiny", vocab_size=100)
model = tt.Transformer(config)
source = np.array([[5, 6, 7, 8, 3, 0]])  # 0 is padding
target_in = np.array([[2, 9, 10]])  # start token first
logits = model({"source_ids": source, "target_ids": target_in})
probabilities = keras.ops.softmax(logits, axis=-1)
print("logits:", tuple(logits.shape), "| each row sums to", float(keras.ops.sum(probabilities[0, 0])))
tokens, scores = tt.greedy_decode(model, source, max_length=5)
print("an (untrained) greedy translation, as ids:", np.asarray(tokens)[0])

# %% [markdown]
# ## 3. Its overall structure
# 整体结构
#
# An encoder-decoder: N = 6 encoder blocks and 6 decoder blocks in the paper's base model
# (d_model 512, 8 heads, d_ff 2048), shared source/target/output embeddings. The `base` preset
# is that model.

# %%
base = tt.Transformer(tt.TransformerConfig.preset("base", vocab_size=37000))
base.summary()
print("encoder blocks:", len(base.encoder.blocks), "| decoder blocks:", len(base.decoder.blocks))
print(f"parameters: {base.count_params():,} (the paper reports about 65M)")
assert len(base.encoder.blocks) == len(base.decoder.blocks) == 6
