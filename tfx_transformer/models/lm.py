"""`TransformerLM`: a decoder-only language model over fixed segments, with Transformer-XL memory.

The answers to inputs longer than the model's maximum length, as one model:

- vanilla (Al-Rfou et al. 2018): `memory_length=0`; each segment of `max_length` tokens is
  processed on its own, so a segment's first tokens see no context;
- Transformer-XL (Dai et al. 2019): `memory_length=M` with relative positions (best
  `position="transformer_xl"`); each layer's inputs at the last M positions are kept, without
  gradient, and the next segment's self-attention also attends to them.

`tfx_transformer.tasks.lm.metrics` measures the three evaluation procedures the article describes:
per segment, sliding window, and with memory.
"""

import keras
from keras import ops

from tfx_transformer.layers import causal_mask, padding_mask
from tfx_transformer.models.base import SingleStackModel, ponder_kwargs


def check_lm_config(config):
    """Refuses the settings a language model cannot use, before anything is built."""
    if config.memory_length and not config.is_relative:
        raise ValueError(
            "A Transformer-XL memory needs relative positions (position='transformer_xl', "
            f"'shaw' or 'tener'): absolute ones restart at every segment. Received: "
            f"position={config.position!r}"
        )
    if config.linformer_length is not None:
        raise ValueError("Linformer attention is not causal; a language model cannot use it.")


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TransformerLM(SingleStackModel):
    """Causal self-attention blocks (`num_decoder_layers` of them) and a tied output projection.

    `lm(token_ids [B, T])` -> float32 logits [B, T, V] for the token after each position.
    `lm({"token_ids": [B, T], "context_ids": [B, M]})` first runs the M tokens before the segment
    (no gradient) to fill the memory, then the segment: how XL mode trains.
    `lm.step(token_ids, memory)` -> (logits, next memory): how XL mode evaluates, segment after
    segment. A memory is `(states, valid)`: one [B, M, d_model] tensor per layer and a [B, M]
    bool mask of the positions that hold a real token (`empty_memory`).
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(config, num_layers_field="num_decoder_layers", stack_name="decoder", **kwargs)
        check_lm_config(self.model_config)
        self.build()

    @property
    def memory_length(self):
        return self.model_config.memory_length

    def empty_memory(self, batch_size):
        """A memory with no real positions, for the first segment."""
        shape = (batch_size, self.memory_length, self.model_config.d_model)
        states = tuple(ops.zeros(shape, self.compute_dtype) for _ in self.stack.blocks)
        return states, ops.zeros((batch_size, self.memory_length), "bool")

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            token_ids = inputs["token_ids"]
            context_ids = inputs.get("context_ids")
        else:
            token_ids, context_ids = inputs, None
        memory = None
        if context_ids is not None and self.memory_length:
            batch_size = ops.shape(context_ids)[0]
            _, memory = self.step(context_ids, self.empty_memory(batch_size), training=training)
        logits, _ = self.step(token_ids, memory, training=training)
        return logits

    def step(self, token_ids, memory=None, training=None):
        """One segment: float32 logits [B, T, V] and the memory for the next segment (None when
        the model keeps none)."""
        config = self.model_config
        length = ops.shape(token_ids)[1]
        real = padding_mask(token_ids, config.pad_id)  # (B, T)
        x = self.embed(token_ids, training)
        if memory is None or not self.memory_length:
            mask = ops.logical_and(causal_mask(length), ops.expand_dims(real, 1))  # (B, T, T)
            x = self.stack(
                x, attention_mask=mask, training=training, **ponder_kwargs(config, real)
            )
            return self._logits(x), None
        states, valid = memory
        remembered = ops.shape(valid)[1]
        keys_valid = ops.concatenate([ops.cast(valid, "bool"), real], axis=1)  # (B, M + T)
        mask = ops.logical_and(
            causal_mask(length, remembered + length, query_offset=remembered),
            ops.expand_dims(keys_valid, 1),
        )  # (B, T, M + T)
        x, block_inputs = self.stack(
            x,
            attention_mask=mask,
            memory=states,
            query_offset=remembered,
            return_block_inputs=True,
            training=training,
        )
        keep = self.memory_length
        next_states = tuple(
            ops.stop_gradient(ops.concatenate([ops.cast(m, h.dtype), h], axis=1)[:, -keep:])
            for m, h in zip(states, block_inputs)
        )
        return self._logits(x), (next_states, keys_valid[:, -keep:])

    def _logits(self, hidden):
        return ops.cast(self.token_embedding.attend(hidden), "float32")
