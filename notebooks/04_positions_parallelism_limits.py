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
# # The Transformer, part 4: distance, parallelism, positions, and its problems
#
# Questions 8, 9, 11 and 15, measured on this machine's CPU.

# %%
import os
import time

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


def best_time(function, repeats=5):
    function()  # warm-up (tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


# %% [markdown]
# ## 8. Long-range dependencies
# 长距离依赖
#
# The longest path a signal travels between two of n positions: 1 in self-attention (every
# position attends to every other in one layer), n in an RNN (one step per position), and n/k
# layers of width-k convolutions (log_k n with dilations).

# %%
lengths = np.array([8, 16, 32, 64, 128, 256, 512])
k = 3
plt.figure(figsize=(5, 3))
plt.loglog(lengths, np.ones_like(lengths), "o-", label="self-attention: 1")
plt.loglog(lengths, lengths, "o-", label="RNN: n")
plt.loglog(lengths, np.ceil(lengths / k), "o-", label=f"CNN, kernel {k}: n/k")
plt.loglog(lengths, np.ceil(np.log(lengths) / np.log(k)), "o-", label=f"dilated CNN: log_k n")
plt.xlabel("sequence length n")
plt.ylabel("longest path (layers or steps)")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()
# The package's attention shows it: in one layer, the last position weighs the first directly.
weights = L.MultiHeadAttention(2, 8)(
    rng.normal(size=(1, 512, 8)).astype("float32"), return_attention_scores=True
)[1]
print("weight of position 0 in position 511's output, one layer:", float(ops.convert_to_numpy(weights)[0, 0, 511, 0]))

# %% [markdown]
# ## 9. Parallelism
# 如何并行化
#
# An RNN must run its n steps one after another: step t needs step t-1's state. Self-attention
# computes all n positions at once with a few matrix products, so its number of sequential
# steps is 1, whatever n; that is what lets a GPU or TPU fill its thousands of lanes. Timed here on
# this 2-core CPU for one layer of width 128, batch 32: the package's `MultiHeadAttention`
# against a Keras `LSTM` (the RNN of the pre-Transformer translation models), both compiled
# with tf.function.

# %%
width = 128
attention = L.MultiHeadAttention(4, width)
rnn = keras.layers.LSTM(width, return_sequences=True)
attend = tf.function(lambda x: attention(x), reduce_retracing=True)
recur = tf.function(lambda x: rnn(x), reduce_retracing=True)
sizes = [32, 64, 128, 256, 512]
attention_ms, rnn_ms = [], []
for n in sizes:
    x = tf.constant(rng.normal(size=(32, n, width)).astype("float32"))
    attention_ms.append(best_time(lambda: attend(x)) * 1000)
    rnn_ms.append(best_time(lambda: recur(x)) * 1000)
for n, a, r in zip(sizes, attention_ms, rnn_ms):
    print(f"n={n:4d}: sequential steps attention 1, LSTM {n:4d} | time attention {a:7.2f} ms, "
          f"LSTM {r:7.2f} ms, LSTM/attention {r / a:4.1f}x")
faster = [n for n, a, r in zip(sizes, attention_ms, rnn_ms) if a < r]
print("attention is faster here for n in", faster or "none of the lengths tried")
plt.figure(figsize=(5, 3))
plt.loglog(sizes, attention_ms, "o-", label="self-attention (1 sequential step)")
plt.loglog(sizes, rnn_ms, "o-", label="LSTM (n sequential steps)")
plt.xlabel("sequence length n")
plt.ylabel("ms per layer (batch 32)")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# A 2-core CPU has little parallel hardware to fill, so here the total arithmetic decides:
# attention's grows as n^2 d, the LSTM's as n d^2 (with four gates). Read the printed ratios:
# on short sequences the parallel matrix products win; as n grows past d, the n^2 term catches
# up (question 15). On an accelerator, the sequential steps are what cannot be shortened.

# %% [markdown]
# ## 11. Position embedding
# position embedding
#
# Self-attention by itself ignores order: permute the input rows, and the outputs are permuted the
# same way (permutation equivariance). The paper adds a fixed sinusoidal encoding,
# PE(p, 2i) = sin(p / 10000^(2i/d)) and PE(p, 2i+1) = cos(p / 10000^(2i/d)), so each position gets
# a distinct signature; `LearnedPositionEmbedding` learns one vector per position instead.

# %%
encoding = ops.convert_to_numpy(L.sinusoidal_encoding(64, 128))
plt.figure(figsize=(6, 3))
plt.imshow(encoding, aspect="auto", cmap="RdBu")
plt.xlabel("feature (even: sin, odd: cos)")
plt.ylabel("position")
plt.colorbar()
plt.tight_layout()
plt.show()

encoder = L.Encoder(2, d_model=16, num_heads=2, d_ff=32, dropout=0.0)
positions = L.SinusoidalPositionEncoding()
x = rng.normal(size=(1, 6, 16)).astype("float32")
permutation = np.array([3, 0, 5, 1, 4, 2])
without = ops.convert_to_numpy(encoder(x))
without_permuted = ops.convert_to_numpy(encoder(x[:, permutation]))
with_positions = ops.convert_to_numpy(encoder(x + positions(x)))
shuffled = x[:, permutation]
with_permuted = ops.convert_to_numpy(encoder(shuffled + positions(shuffled)))
equivariant = np.allclose(without_permuted, without[:, permutation], atol=1e-5)
still = np.allclose(with_permuted, with_positions[:, permutation], atol=1e-3)
print("without positions, shuffled input -> outputs shuffled the same way:", equivariant)
print("with positions, the same holds:", still)
assert equivariant and not still

# %% [markdown]
# ## 15. The Transformer's problems
# 存在问题
#
# - **A fixed maximum length**: learned positions exist only up to `max_length`, and inputs are
#   cut there (the export truncates to the model's `max_length` tokens). Answers in the package:
#   `TransformerLM` over fixed segments (vanilla: each on its own, scored per segment or by a
#   sliding window) and with Transformer-XL's segment-level memory (`memory_length`,
#   `position="transformer_xl"`); `python train.py --task lm` and `benchmarks/long_context.py`.
# - **No direction or relative position**: the sinusoidal signal is absolute, and the dot product
#   of two encodings depends on the distance but not on its sign (shown below), so attention
#   cannot tell the word before "Inc." from the word after it by position alone. The package's
#   answer: `position="shaw"` (Shaw et al.'s relative position attention) and `position="tener"`
#   (TENER's direction-aware attention), shown in the next cell.
# - **O(n^2) time and memory**: every position attends to every other, so the attention weights
#   alone take h x n^2 numbers. Measured below; `LinformerAttention` (`linformer_length=k` in the
#   config) projects keys and values to k rows and is linear in n
#   (`benchmarks/linformer_scaling.py`).
# - **No recurrent inductive bias** (Tran et al. 2018: recurrent models generalize better on
#   hierarchical structure), **not Turing-complete** (a fixed depth is a fixed number of
#   sequential steps, whatever the input's length) and **no conditional computation** (every
#   token gets the same depth, though "bank" in "I arrived at the bank after crossing the river"
#   needs more thought than "river"): the Universal Transformer (`universal_steps`, one block
#   applied repeatedly with shared weights) with adaptive computation time
#   (`adaptive_computation=True`, each position halts on its own). The last cells below.

# %%
# The dot product of absolute encodings is symmetric in the offset: +k and -k look the same.
table = ops.convert_to_numpy(L.sinusoid(np.arange(64), 64))
for k in (1, 4, 9):
    print(f"PE_30 . PE_{30 + k} = {table[30] @ table[30 + k]:.4f},  PE_30 . PE_{30 - k} = "
          f"{table[30] @ table[30 - k]:.4f}")
# TENER scores the same query and key differently to the left and to the right, and, like Shaw's
# attention, only the offset matters: every diagonal of its score matrix is constant.
tener = L.TenerAttention(2)
tener.build((None, None, 16))
query = np.repeat(rng.normal(size=(1, 2, 1, 8)).astype("float32"), 12, axis=2)
key = np.repeat(rng.normal(size=(1, 2, 1, 8)).astype("float32"), 12, axis=2)
scores = ops.convert_to_numpy(tener.compute_scores(query, key))[0, 0]
for k in (1, 4):
    print(f"TENER score at offset +{k}: {scores[5, 5 + k]:.3f}, at -{k}: {scores[5, 5 - k]:.3f}")
assert all(abs(scores[5, 5 + k] - scores[5, 5 - k]) > 1e-3 for k in (1, 4))
assert np.allclose(np.diagonal(scores, 2), scores[0, 2], atol=1e-5)

# %%
layer = L.MultiHeadAttention(4, 64)
run = tf.function(lambda x: layer(x), reduce_retracing=True)
sizes = [128, 256, 512, 1024, 2048]
milliseconds, megabytes = [], []
for n in sizes:
    x = tf.constant(rng.normal(size=(1, n, 64)).astype("float32"))
    milliseconds.append(best_time(lambda: run(x), repeats=3) * 1000)
    megabytes.append(4 * n * n * 4 / 2**20)  # float32 weights, 4 heads: the [1, h, n, n] tensor
for i, n in enumerate(sizes):
    growth = "" if i == 0 else f", x{milliseconds[i] / milliseconds[i - 1]:.1f} time per doubling"
    print(f"n={n:5d}: {milliseconds[i]:8.2f} ms, attention weights {megabytes[i]:7.1f} MiB{growth}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].loglog(sizes, milliseconds, "o-")
axes[0].loglog(sizes, milliseconds[-1] * (np.array(sizes) / sizes[-1]) ** 2, ":", label="n^2")
axes[0].set_xlabel("n")
axes[0].set_ylabel("ms, one self-attention layer")
axes[0].legend()
axes[1].loglog(sizes, megabytes, "o-")
axes[1].set_xlabel("n")
axes[1].set_ylabel("MiB of attention weights")
plt.tight_layout()
plt.show()
print(f"attention weights grow x{megabytes[-1] / megabytes[-2]:.0f} per doubling of n; time grows "
      f"x{milliseconds[-1] / milliseconds[-2]:.1f} over the last doubling on this machine")

# %% [markdown]
# ### Problems 3-5: the Universal Transformer with adaptive computation time
#
# **Recurrence in depth.** A universal stack is one block applied `universal_steps` times with a
# timestep signal added before each application: the number of sequential steps is a
# hyperparameter, not a count of weight matrices. Its parameters do not grow with the steps:

# %%
def parameters(**overrides):
    return tt.Transformer(tt.TransformerConfig.preset("tiny", vocab_size=100, **overrides)).count_params()


for depth in (2, 4, 12):
    print(f"depth {depth:2d}: vanilla {parameters(num_encoder_layers=depth, num_decoder_layers=depth):,} "
          f"parameters, universal {parameters(universal_steps=depth):,}, universal + ACT "
          f"{parameters(universal_steps=depth, adaptive_computation=True):,}")
assert parameters(universal_steps=2) == parameters(universal_steps=12)

# %% [markdown]
# **A number of steps that is not a number of layers** is what the "not Turing-complete"
# argument asks for, and length generalization is how the UT paper tests it: train on short
# inputs, test on longer ones. `python benchmarks/universal.py` does that on
# `builtin:algorithmic:copy|reverse|addition` (trained on 1-20 symbols, tested on 21-40 and
# 41-60) with three models of equal parameters, 1,000 training steps each, three seeds; its
# measured table (this CPU, README "Universal Transformer and ACT"), test exact match:
#
# | task | vanilla 21-40 / 41-60 | universal (4 steps) | universal + ACT (up to 6) |
# |---|---|---|---|
# | copy | 5.8% / 0.0% | 0.0% / 0.0% | 7.0% / 0.0% |
# | reverse | 0.2% / 0.0% | 0.0% / 0.0% | 0.0% / 0.0% |
# | addition | 0.0% / 0.0% | 0.0% / 0.0% | 0.0% / 0.0% |
#
# At this scale none of them generalizes to longer inputs: recurrence in depth alone does not
# give it (the positions past 20 were never seen in training). In distribution, ACT matched
# vanilla on copy (99.7% against 98.5%) and trailed it on reverse (17% against 61%).

# %% [markdown]
# **Conditional computation.** With ACT every position computes a halting probability at each
# step and stops once their sum passes 1 - epsilon; its output is the halting-weighted mean of
# its states, and the ponder cost (steps + remainder, times tau) in the loss makes pondering
# pay its way. A tiny universal + ACT model trained briefly on the built-in number words, and
# the steps each source piece took. Number words are easy: with the default tau of 0.01 such a
# model learned to stop after one step almost everywhere (a mean of 1.03 steps per piece after
# 300 steps, when measured); with tau = 0.001 some pieces take a second step (after 300 steps of
# 1,024-token batches, "and" and "seventy" did, when measured: a mean of 1.21 steps per piece, and
# 79% exact match on validation). Small batches: on this CPU, 200 steps of the preset's 3,072
# tokens took 137 s and reached 35% exact match, these 300 steps 95 s.

# %%
import tempfile

from tfx_transformer.data import Tokenizer
from tfx_transformer.tokens import END_ID
from tfx_transformer.training.loop import run
from tfx_transformer.training.options import TrainOptions

act_folder = os.path.join(tempfile.mkdtemp(), "run")
act_results = run(TrainOptions(
    output=act_folder, steps=300, eval_every=300, eval_examples=100, samples=0, export=False,
    average_last=0, beam_size=1, batch_tokens=1024,
    model={"universal_steps": 6, "adaptive_computation": True, "ponder_cost": 0.001},
))
act_model = keras.models.load_model(os.path.join(act_folder, "model.keras"))
act_tokenizer = Tokenizer.load(os.path.join(act_folder, "tokenizer"))
print(f"validation exact match after {act_results['steps']} steps: {act_results['exact_match']:.1%}")

# %%
sentences = [
    "seventy thousand and seventy-one",
    "one hundred",
    "nine hundred and ninety-nine thousand, nine hundred and ninety-nine",
    "four hundred and eighty thousand and eighty",
]
rows = [act_tokenizer.encode([s])[0] + [END_ID] for s in sentences]
width = max(map(len, rows))
source_ids = np.array([r + [0] * (width - len(r)) for r in rows])
steps = ops.convert_to_numpy(act_model.ponder_steps(
    {"source_ids": source_ids, "target_ids": np.full((len(rows), 1), tt.TransformerConfig().start_id)}
)["encoder"])
fig, axis = plt.subplots(figsize=(min(14, 0.6 * width + 2), 2.6))
shown = np.ma.masked_where(source_ids == 0, steps)
image = axis.imshow(shown, cmap="magma", vmin=1, vmax=act_model.model_config.universal_steps)
for row, ids in enumerate(rows):
    for column, token in enumerate(ids):
        axis.text(column, row, act_tokenizer.id_to_piece(token), ha="center", va="center",
                  fontsize=7, color="cyan", rotation=45)
axis.set_yticks(range(len(sentences)))
axis.set_yticklabels([s[:24] for s in sentences], fontsize=7)
axis.set_xticks([])
fig.colorbar(image, label="ponder steps")
plt.tight_layout()
plt.show()
real = steps[source_ids != 0]
print(f"steps per source piece: mean {real.mean():.2f} of at most "
      f"{act_model.model_config.universal_steps}, from {real.min():.0f} to {real.max():.0f}")

# %% [markdown]
# **What ACT costs.** The halting bookkeeping is cheap, but the steps are unrolled: every
# position is computed at every step up to `universal_steps` and halted ones are masked, so
# compute follows the most steps, not the mean (a per-batch early exit would only pay when
# every position of the batch halts). At equal parameters the universal block is also wider
# (its one block holds what vanilla spreads over its layers). Forward passes on this CPU, the
# models of `benchmarks/universal.py` (the tiny preset; the universal block's feed-forward
# width 704 matches the parameters of 2 + 2 vanilla blocks):

# %%
sizes = {"vanilla, 2 + 2 layers": dict(num_encoder_layers=2, num_decoder_layers=2),
         "universal, 4 steps": dict(universal_steps=4, d_ff=704),
         "universal + ACT, up to 6 steps": dict(universal_steps=6, d_ff=704, adaptive_computation=True)}
batch = {"source_ids": rng.integers(4, 100, size=(16, 24)), "target_ids": rng.integers(4, 100, size=(16, 24))}
forward_ms = {}
for name, overrides in sizes.items():
    candidate = tt.Transformer(tt.TransformerConfig.preset("tiny", vocab_size=100, **overrides))
    forward = tf.function(lambda inputs, m=candidate: m(inputs, training=False))
    forward_ms[name] = best_time(lambda: forward(batch), repeats=3) * 1000
    print(f"{name}: {candidate.count_params():,} parameters, {forward_ms[name]:.1f} ms per batch")
vanilla_ms = forward_ms["vanilla, 2 + 2 layers"]
print("against vanilla: " + ", ".join(f"{name} {ms / vanilla_ms:.2f}x" for name, ms in forward_ms.items()))
