"""NumPy references the layers are checked against: written from the paper, not from the code."""

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, score="scaled_dot", mask=None, additive=None, cosine_scale=1.0):
    """q [..., T, d], k [..., S, d], v [..., S, dv] -> ([..., T, dv], weights)."""
    if score == "scaled_dot":
        s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    elif score == "dot":
        s = q @ np.swapaxes(k, -1, -2)
    elif score == "cosine":
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        s = cosine_scale * (qn @ np.swapaxes(kn, -1, -2))
    elif score == "additive":
        w_q, w_k, v_a = additive
        t, src = q.shape[-2], k.shape[-2]
        s = np.zeros(q.shape[:-2] + (t, src))
        for i in range(t):
            for j in range(src):
                s[..., i, j] = np.tanh(q[..., i, :] @ w_q + k[..., j, :] @ w_k) @ v_a
    if mask is not None:
        s = np.where(mask, s, np.finfo(np.float32).min)
    w = softmax(s)
    return w @ v, w


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def multi_head_attention(mha, query, value, mask=None):
    """Reference for tfx_transformer MultiHeadAttention using its weights; mask [B, T, S]."""
    w = {v.path.split("/")[-2] + "/" + v.name: np.asarray(v) for v in mha.weights}
    q = np.einsum("btd,dhk->bhtk", query, w["query/kernel"]) + w["query/bias"][:, None]
    k = np.einsum("bsd,dhk->bhsk", value, w["key/kernel"]) + w["key/bias"][:, None]
    v = np.einsum("bsd,dhk->bhsk", value, w["value/kernel"]) + w["value/bias"][:, None]
    ctx, weights = attention(q, k, v, mask=None if mask is None else mask[:, None])
    out = np.einsum("bhtk,hkd->btd", ctx, w["attention_output/kernel"])
    return out + w["attention_output/bias"], weights
