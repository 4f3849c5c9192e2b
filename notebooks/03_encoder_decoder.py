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
# # The Transformer, part 3: encoder, decoder, residuals, LayerNorm, masks
#
# Questions 4, 5, 12, 13 and 14, walking real batches through the package's layers.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from keras import ops

import tfx_transformer as tt
from tfx_transformer import layers as L

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
config = tt.TransformerConfig.preset("tiny", vocab_size=50, dropout=0.0)
model = tt.Transformer(config)
source = np.array([[11, 12, 13, 14, 3, 0, 0], [21, 22, 3, 0, 0, 0, 0]])  # two sentences, padded
target_in = np.array([[2, 31, 32, 33], [2, 41, 0, 0]])

# %% [markdown]
# ## 4. The encoder
# Transformer-encoder 结构
#
# One batch through the first encoder block, step by step, with the shape at each step:
# token embedding (x sqrt(d_model)), + positions, multi-head self-attention under the padding
# mask, residual + LayerNorm, position-wise feed-forward, residual + LayerNorm.

# %%
block = model.encoder.blocks[0]
mask = L.key_padding_mask(source)  # (B, 1, S): True where a key is a real token
x = model.source_embedding(source)
print("token ids                ", source.shape)
print("embedding x sqrt(d_model)", tuple(x.shape))
x = x + model.source_positions(x)
print("+ sinusoidal positions   ", tuple(x.shape))
attended = block.self_attention(x, attention_mask=mask)
print("self-attention           ", tuple(attended.shape))
x = block.self_attention_norm(x + attended)
print("residual + LayerNorm     ", tuple(x.shape))
x = block.feed_forward_norm(x + block.feed_forward(x))
print("FFN, residual + LayerNorm", tuple(x.shape))
by_hand = ops.convert_to_numpy(x)
embedded = model.source_embedding(source)
whole_block = ops.convert_to_numpy(block(embedded + model.source_positions(embedded), attention_mask=mask))
np.testing.assert_allclose(by_hand, whole_block, atol=1e-5)
print("the step-by-step walk equals EncoderBlock's own output")

# %% [markdown]
# ## 5. The decoder
# Transformer-decoder 结构
#
# Each decoder block has masked self-attention (a position sees only itself and the positions
# before it), encoder-decoder (cross) attention over the encoder output, and a feed-forward
# network. A final Linear layer (here the shared embedding matrix, transposed) and a softmax give
# a distribution over the vocabulary for the next token.

# %%
encoder_output, source_mask = model.encode(source)
logits, self_weights, cross_weights = model.decode(
    target_in, encoder_output, source_mask, return_attention_scores=True
)
print("encoder output            ", tuple(encoder_output.shape))
print("decoder self-attention    ", tuple(self_weights[0].shape), "(B, heads, T, T)")
print("decoder cross-attention   ", tuple(cross_weights[0].shape), "(B, heads, T, S)")
print("Linear over the vocabulary", tuple(logits.shape))
probabilities = ops.convert_to_numpy(ops.softmax(logits, axis=-1))
print("softmax rows sum to 1:", np.allclose(probabilities.sum(-1), 1.0, atol=1e-5))
upper = np.triu(np.ones((4, 4), bool), k=1)
assert np.all(ops.convert_to_numpy(self_weights[0])[:, :, upper] == 0.0)
print("self-attention weights above the diagonal (the future) are exactly 0")

# %% [markdown]
# ## 12. Residual connections
# 残差模块
#
# Each sublayer's output is added to its input: x + Sublayer(x). Two things to measure at
# initialization, for 12 blocks of the package's layers: the gradient norm reaching each block,
# and how distinct the tokens stay. The stacks: the package's `Encoder` (post-LN, as in the
# paper, and pre-LN) and the same attention, feed-forward and LayerNorm layers with the residual
# additions left out.

# %%
depth, d_model = 12, 64
inputs = tf.constant(rng.normal(size=(8, 10, d_model)).astype("float32"))
targets = rng.normal(size=(8, 10, d_model)).astype("float32")  # a regression target for the loss


class PlainStack(keras.layers.Layer):
    """The encoder's sublayers and LayerNorms, without the residual additions."""

    def __init__(self, depth):
        super().__init__()
        self.parts = []
        for _ in range(depth):
            self.parts.append(
                (
                    L.MultiHeadAttention(4, d_model),
                    keras.layers.LayerNormalization(epsilon=1e-6),
                    L.PositionwiseFeedForward(256),
                    keras.layers.LayerNormalization(epsilon=1e-6),
                )
            )

    def call(self, x):
        for attention, norm1, ffn, norm2 in self.parts:
            x = norm2(ffn(norm1(attention(x))))
        return x


def measure(stack, blocks):
    """(gradient norm per block, mean cosine similarity between the tokens of a sentence)."""
    with tf.GradientTape() as tape:
        outputs = stack(inputs)
        loss = tf.reduce_mean(tf.square(outputs - targets))
    grads = tape.gradient(loss, stack.trainable_weights)
    by_variable = {v.path: g for v, g in zip(stack.trainable_weights, grads)}
    norms = [
        float(tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(by_variable[v.path])) for v in block])))
        for block in blocks
    ]
    unit = outputs.numpy() / np.linalg.norm(outputs.numpy(), axis=-1, keepdims=True)
    pairs = np.triu_indices(unit.shape[1], 1)
    similarity = float(np.mean([(u @ u.T)[pairs].mean() for u in unit]))
    return norms, similarity


results = {}
for name, norm_first in [("residual, post-LN (paper)", False), ("residual, pre-LN", True)]:
    keras.utils.set_random_seed(1)
    encoder = L.Encoder(depth, d_model=d_model, num_heads=4, d_ff=256, dropout=0.0, norm_first=norm_first)
    encoder(inputs)  # builds the weights that are listed next
    results[name] = measure(encoder, [b.trainable_weights for b in encoder.blocks])
keras.utils.set_random_seed(1)
plain = PlainStack(depth)
plain(inputs)
results["no residual"] = measure(
    plain, [[w for layer in part for w in layer.trainable_weights] for part in plain.parts]
)
input_similarity = float(np.mean([
    (u @ u.T)[np.triu_indices(10, 1)].mean()
    for u in inputs.numpy() / np.linalg.norm(inputs.numpy(), axis=-1, keepdims=True)
]))
print(f"token similarity of the inputs: {input_similarity:.3f}")
for name, (norms, similarity) in results.items():
    print(f"{name:>26}: gradient norm block 1 {norms[0]:.2e}, block {depth} {norms[-1]:.2e}; "
          f"token similarity of the outputs {similarity:.4f}")
plt.figure(figsize=(5, 3))
for name, (norms, _) in results.items():
    plt.semilogy(range(1, depth + 1), norms, "o-", label=name)
plt.xlabel("block (1 = nearest the input)")
plt.ylabel("gradient norm")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()
assert results["no residual"][1] > 0.99 > results["residual, pre-LN"][1]

# %% [markdown]
# With a LayerNorm after every sublayer, the gradient norms above stay within a small factor of
# each other in all three stacks at this depth: normalization alone keeps the scale. What the
# residual path keeps is the tokens' identity. Without it, attention averages the tokens
# together block after block, and the outputs of a sentence's tokens end up nearly parallel
# (similarity close to 1: "rank collapse", Dong et al. 2021), so the gradient no longer tells one
# token from another. The residual path is what carries each token's own component forward: in
# pre-LN, where normalization never touches that path, the tokens stay clearly distinct after 12
# blocks; in post-LN, whose LayerNorms sit on the path itself, much of it is lost at this depth
# at initialization, one reason deep post-LN models need the learning-rate warm-up.

# %% [markdown]
# ## 13. LayerNorm vs BatchNorm
# Layer normalization
#
# LayerNorm normalizes each token over its features (axis -1): a token's output depends on that
# token alone. BatchNorm normalizes each feature over the batch and the positions (axes 0 and 1):
# its statistics mix sentences and, in a padded batch, the padding too. So the same real token
# is normalized differently depending on how much padding shares its batch.

# %%
real = rng.normal(loc=3.0, size=(2, 4, 8)).astype("float32")  # 2 sentences x 4 tokens
little_padding = np.concatenate([real, np.zeros((2, 1, 8), "float32")], axis=1)
much_padding = np.concatenate([real, np.zeros((2, 12, 8), "float32")], axis=1)

layer_norm = keras.layers.LayerNormalization(axis=-1)
batch_norm = keras.layers.BatchNormalization(axis=-1)
layer_a = ops.convert_to_numpy(layer_norm(little_padding))[:, :4]
layer_b = ops.convert_to_numpy(layer_norm(much_padding))[:, :4]
batch_a = ops.convert_to_numpy(batch_norm(little_padding, training=True))[:, :4]
batch_b = ops.convert_to_numpy(batch_norm(much_padding, training=True))[:, :4]
layer_change = float(np.abs(layer_a - layer_b).max())
batch_change = float(np.abs(batch_a - batch_b).max())
print("LayerNorm statistics: one mean per token, shape", real.mean(axis=-1, keepdims=True).shape)
print("BatchNorm statistics: one mean per feature, shape", real.mean(axis=(0, 1)).shape)
print(f"change of the real tokens' outputs when padding grows: LayerNorm {layer_change:.2e}, "
      f"BatchNorm {batch_change:.2f}")
assert layer_change < 1e-5 < batch_change

# %% [markdown]
# ## 14. Masks
# 什么是 Mask
#
# Two masks, both boolean with True = may attend: the padding mask (no attention to padded
# keys; encoder and decoder) and the sequence, or causal, mask (no attention to later positions;
# decoder self-attention). The decoder combines them.

# %%
target = np.array([[2, 31, 32, 0, 0]])
padding = ops.convert_to_numpy(L.key_padding_mask(target))[0]
causal = ops.convert_to_numpy(L.causal_mask(5))[0]
combined = ops.convert_to_numpy(L.decoder_self_attention_mask(target))[0]
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for axis, (title, matrix) in zip(
    axes, [("padding", np.repeat(padding, 5, 0)), ("sequence (causal)", causal), ("combined", combined)]
):
    axis.imshow(matrix, cmap="Greens", vmin=0, vmax=1)
    axis.set_title(title)
    axis.set_xlabel("key")
    axis.set_ylabel("query")
plt.tight_layout()
plt.show()
print(combined.astype(int))

# The decoder cannot see the future: change the target after position 1 ...
before = ops.convert_to_numpy(model({"source_ids": source, "target_ids": target_in}))
changed = target_in.copy()
changed[:, 2:] = [[44, 45], [46, 47]]
after = ops.convert_to_numpy(model({"source_ids": source, "target_ids": changed}))
# ... and the predictions at positions 0 and 1 do not move, while later ones do.
print("positions 0-1 unchanged:", np.allclose(before[:, :2], after[:, :2], atol=1e-5))
print("positions 2-3 changed:  ", not np.allclose(before[:, 2:], after[:, 2:], atol=1e-3))
assert np.allclose(before[:, :2], after[:, :2], atol=1e-5)
