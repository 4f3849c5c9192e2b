"""A translation model in the CTranslate2 format, for its fast CPU and GPU inference engine.

    python -m tfx_transformer.export --run DIR --format ctranslate2 [--quantization int8]

writes DIR/ctranslate2/<version>/ (model.bin, config.json, the shared vocabulary). The weights
fill ctranslate2's own `TransformerSpec` (needs the `ctranslate2` extra): post- or pre-LN
blocks, fused Q/K/V projections, the embeddings scaled by sqrt(d_model), the position table,
and the source end token added by CTranslate2 as the model was trained. Models with relative
positions, Linformer attention or score functions other than scaled dot product have no
CTranslate2 counterpart and are refused.
"""

import os

import ctranslate2
import keras
import numpy as np
from ctranslate2.specs import common_spec, transformer_spec

from tfx_transformer.files import atomic_directory
from tfx_transformer.layers import sinusoidal_encoding

ACTIVATIONS = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16")


def check_convertible(config):
    problems = []
    if config.position not in ("sinusoidal", "learned"):
        problems.append(f"position={config.position!r} (sinusoidal or learned only)")
    if config.linformer_length is not None:
        problems.append("Linformer attention")
    if config.score != "scaled_dot":
        problems.append(f"score={config.score!r} (scaled_dot only)")
    if config.universal_steps:
        # CTranslate2 layers add no signal between layers (the universal timestep signal).
        problems.append("the Universal Transformer's recurrence (universal_steps)")
    if config.activation not in ACTIVATIONS:
        problems.append(f"activation={config.activation!r} ({' or '.join(ACTIVATIONS)} only)")
    if problems:
        raise ValueError("CTranslate2 has no counterpart for " + ", ".join(problems) + ".")


def transformer_spec_of(model, vocabulary):
    """ctranslate2's TransformerSpec holding `model`'s weights and `vocabulary`'s pieces."""
    config = model.model_config
    check_convertible(config)
    spec = transformer_spec.TransformerSpec.from_config(
        (config.num_encoder_layers, config.num_decoder_layers),
        config.num_heads,
        pre_norm=config.norm_first,
        activation=ACTIVATIONS[config.activation],
    )
    # Weights by their path below the model: "encoder/block_0/self_attention/query/kernel", ...
    weights = {w.path.split("/", 1)[1]: keras.ops.convert_to_numpy(w.value) for w in model.weights}
    source_embeddings = weights["source_embedding/embeddings"]
    target_embeddings = weights.get("target_embedding/embeddings", source_embeddings)
    spec.encoder.embeddings[0].weight = source_embeddings
    spec.decoder.embeddings.weight = target_embeddings
    spec.encoder.position_encodings.encodings = position_table(weights, config, "source_positions")
    spec.decoder.position_encodings.encodings = position_table(weights, config, "target_positions")
    if config.share_embeddings:
        spec.decoder.projection.weight = target_embeddings
    else:
        set_dense(spec.decoder.projection, weights, "output_projection")
    for side in ("encoder", "decoder"):
        if config.norm_first:
            set_norm(getattr(spec, side).layer_norm, weights, f"{side}/final_norm")
        for index, layer in enumerate(getattr(spec, side).layer):
            set_block(layer, weights, f"{side}/block_{index}", cross=side == "decoder")
    spec.config.add_source_eos = True  # sources were trained with the end token after them
    spec.config.layer_norm_epsilon = config.layer_norm_epsilon
    pieces = [vocabulary.id_to_piece(i) for i in range(vocabulary.vocab_size)]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    return spec


def position_table(weights, config, name):
    if config.position == "learned":
        return weights[f"{name}/position_embeddings"]
    return keras.ops.convert_to_numpy(sinusoidal_encoding(config.max_length, config.d_model))


def set_block(layer, weights, scope, cross):
    set_attention(layer.self_attention, weights, f"{scope}/self_attention", fused=3)
    set_norm(layer.self_attention.layer_norm, weights, f"{scope}/self_attention_norm")
    if cross:
        set_attention(layer.attention, weights, f"{scope}/cross_attention", fused=2)
        set_norm(layer.attention.layer_norm, weights, f"{scope}/cross_attention_norm")
    set_dense(layer.ffn.linear_0, weights, f"{scope}/feed_forward/inner")
    set_dense(layer.ffn.linear_1, weights, f"{scope}/feed_forward/outer")
    set_norm(layer.ffn.layer_norm, weights, f"{scope}/feed_forward_norm")


def set_attention(spec, weights, scope, fused):
    """Q, K, V kernels [d, h, k] as one [3 * h * k, d] matrix (self-attention), or Q alone and
    K, V fused (cross-attention); the output kernel [h, k, d] as [d, h * k]."""
    def projection(name):
        kernel = weights[f"{scope}/{name}/kernel"]  # (d, h, k)
        return kernel.reshape(kernel.shape[0], -1).T, weights[f"{scope}/{name}/bias"].reshape(-1)

    parts = [projection(name) for name in ("query", "key", "value")]
    groups = [parts] if fused == 3 else [parts[:1], parts[1:]]
    for linear, group in zip(spec.linear, groups):
        linear.weight = np.concatenate([w for w, _ in group], axis=0)
        linear.bias = np.concatenate([b for _, b in group], axis=0)
    kernel = weights[f"{scope}/attention_output/kernel"]  # (h, k, d)
    spec.linear[-1].weight = kernel.reshape(-1, kernel.shape[-1]).T
    spec.linear[-1].bias = weights[f"{scope}/attention_output/bias"]


def set_dense(spec, weights, scope):
    spec.weight = weights[f"{scope}/kernel"].T  # Keras [in, out] -> [out, in]
    if f"{scope}/bias" in weights:
        spec.bias = weights[f"{scope}/bias"]


def set_norm(spec, weights, scope):
    spec.gamma = weights[f"{scope}/gamma"]
    spec.beta = weights[f"{scope}/beta"]


def export_ctranslate2(model, vocabulary, path, quantization=None):
    """Writes the CTranslate2 model of `model` to the new folder `path` (atomically)."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}. Received: {quantization!r}")
    spec = transformer_spec_of(model, vocabulary)
    spec.validate()
    spec.optimize(quantization=quantization)
    with atomic_directory(path) as temporary:
        spec.save(temporary)
    return path


def load_translator(path, compute_type="default"):
    """A ctranslate2.Translator on the CPU over an exported folder."""
    return ctranslate2.Translator(path, device="cpu", compute_type=compute_type,
                                  inter_threads=1, intra_threads=os.cpu_count() or 1)
