"""`Transformer`: the encoder-decoder model of "Attention Is All You Need" as a `keras.Model`."""

import keras
from keras import ops

from tfx_transformer.layers import (
    Dropout,
    TokenEmbedding,
    causal_mask,
    decoder_self_attention_mask,
    key_padding_mask,
    packed_causal_mask,
    padding_mask,
    same_segment_mask,
    segment_positions,
)
from tfx_transformer.models.base import (
    ConfiguredModel,
    embed_tokens,
    make_stack,
    ponder_kwargs,
    position_layer,
)


@keras.saving.register_keras_serializable(package="tfx_transformer")
class Transformer(ConfiguredModel):
    """Encoder-decoder Transformer.

    `model({"source_ids": [B, S] int, "target_ids": [B, T] int})` -> float32 logits [B, T, V]
    for the token after each target position (feed the target shifted right: start token first).
    Token id 0 is padding; the padding and causal masks are derived from the ids here, once.

    Packed rows (several examples one after another in a row, as training batches may come:
    no compute spent on padding) add "source_segment_ids" [B, S] and "target_segment_ids"
    [B, T]: 1, 2, ... for the row's examples in order, 0 on padding. Each example then attends
    only to itself (and its own source) and counts its positions from 0, so that its logits are
    those it would have alone.

    Besides the full pass, the model exposes the pieces decoding needs: `encode`, `decode`,
    `start_decoding` (the key/value caches) and `decode_step` (one position, cached).
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        config = self.model_config
        d_model = config.d_model

        self.source_embedding = TokenEmbedding(
            config.vocab_size, d_model, dtype=self.dtype_policy, name="source_embedding"
        )
        if config.share_embeddings:
            self.target_embedding = self.source_embedding
            self.output_projection = None
        else:
            self.target_embedding = TokenEmbedding(
                config.vocab_size, d_model, dtype=self.dtype_policy, name="target_embedding"
            )
            self.output_projection = keras.layers.Dense(
                config.vocab_size, dtype=self.dtype_policy, name="output_projection"
            )
        self.source_positions = position_layer(config, "source_positions", self.dtype_policy)
        if config.position == "learned":
            self.target_positions = position_layer(config, "target_positions", self.dtype_policy)
        else:  # the fixed encoding (or none, with relative positions) serves both sides
            self.target_positions = self.source_positions
        self.embedding_dropout = Dropout(
            config.dropout, dtype=self.dtype_policy, name="embedding_dropout"
        )
        self.encoder = make_stack(
            config, config.num_encoder_layers, dtype=self.dtype_policy, name="encoder"
        )
        self.decoder = make_stack(
            config, config.num_decoder_layers, decoder=True, dtype=self.dtype_policy, name="decoder"
        )
        # Weights exist from construction on, so a model can be saved, loaded, summarized or
        # placed under a distribution strategy before it has seen data.
        self.build()

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.model_config.d_model)
        builds = [
            (self.source_embedding, ((None, None),)),
            (self.target_embedding, ((None, None),)),
            (self.output_projection, (hidden_shape,)),
            (self.source_positions, (hidden_shape,)),
            (self.target_positions, (hidden_shape,)),
            (self.encoder, (hidden_shape,)),
            (self.decoder, (hidden_shape, hidden_shape)),
        ]
        for layer, shapes in builds:
            if layer is not None and not layer.built:  # shared layers appear twice
                layer.build(*shapes)
        self.built = True

    # The full pass ---------------------------------------------------------------------------

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict) or not {"source_ids", "target_ids"} <= set(inputs):
            received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                "Transformer expects a dict with 'source_ids' [B, S] and 'target_ids' [B, T]. "
                f"Received: {received}"
            )
        source_segments, target_segments = self._segments(inputs)
        if source_segments is None:
            encoder_output, source_mask = self.encode(inputs["source_ids"], training=training)
            return self.decode(
                inputs["target_ids"], encoder_output, source_mask, training=training
            )
        encoder_output, _ = self.encode(
            inputs["source_ids"], training=training, segments=source_segments
        )
        return self.decode(
            inputs["target_ids"],
            encoder_output,
            same_segment_mask(target_segments, source_segments),
            training=training,
            segments=target_segments,
        )

    def _segments(self, inputs):
        """(source, target) segment ids of packed rows, or (None, None)."""
        keys = [key in inputs for key in ("source_segment_ids", "target_segment_ids")]
        if not any(keys):
            return None, None
        if not all(keys):
            raise ValueError(
                "Packed rows need both 'source_segment_ids' and 'target_segment_ids'. "
                f"Received: {sorted(inputs)}"
            )
        refusal = self.model_config.packing_refusal()
        if refusal is not None:
            raise ValueError(f"{refusal}: give it unpacked rows.")
        return inputs["source_segment_ids"], inputs["target_segment_ids"]

    def encode(self, source_ids, training=None, return_attention_scores=False, return_ponder=False,
               segments=None):
        """[B, S] ids -> (encoder output [B, S, d_model], source key mask [B, 1, S]), then the
        attention weights and the ponder statistics when asked. With packed rows' `segments`
        [B, S], the mask returned is the encoder's own [B, S, S]."""
        config = self.model_config
        source_mask = key_padding_mask(source_ids, config.pad_id)  # (B, 1, S)
        self_mask = source_mask if segments is None else same_segment_mask(segments, segments)
        x = self._embed(
            self.source_embedding, self.source_positions, source_ids, 0, training, segments
        )
        encoded = self.encoder(
            x,
            attention_mask=self_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            **ponder_kwargs(config, padding_mask(source_ids, config.pad_id), return_ponder),
        )
        encoded = encoded if isinstance(encoded, tuple) else (encoded,)
        return (encoded[0], self_mask) + encoded[1:]

    def decode(
        self,
        target_ids,
        encoder_output,
        source_mask,
        training=None,
        return_attention_scores=False,
        return_ponder=False,
        segments=None,
    ):
        """Full decoder pass: [B, T] target ids -> float32 logits [B, T, V], then the self and
        cross attention weights and the ponder statistics when asked. `source_mask` is the
        cross-attention mask ([B, 1, S], or [B, T, S] for packed rows, whose target `segments`
        [B, T] are given)."""
        config = self.model_config
        x = self._embed(
            self.target_embedding, self.target_positions, target_ids, 0, training, segments
        )
        if segments is None:
            self_mask = decoder_self_attention_mask(target_ids, config.pad_id)
        else:
            self_mask = packed_causal_mask(segments)
        decoded = self.decoder(
            x,
            encoder_output,
            self_attention_mask=self_mask,
            cross_attention_mask=source_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            **ponder_kwargs(config, padding_mask(target_ids, config.pad_id), return_ponder),
        )
        decoded = decoded if isinstance(decoded, tuple) else (decoded,)
        logits = self._logits(decoded[0])
        return logits if len(decoded) == 1 else (logits,) + decoded[1:]

    def attention_maps(self, inputs):
        """Every attention layer's weights for one batch (inference mode).

        Returns {"encoder_self": [...], "decoder_self": [...], "decoder_cross": [...]}, one float32
        [B, h, T, S] tensor per block.
        """
        encoder_output, source_mask, encoder_self = self.encode(
            inputs["source_ids"], training=False, return_attention_scores=True
        )
        _, decoder_self, decoder_cross = self.decode(
            inputs["target_ids"],
            encoder_output,
            source_mask,
            training=False,
            return_attention_scores=True,
        )
        return {
            "encoder_self": encoder_self,
            "decoder_self": decoder_self,
            "decoder_cross": decoder_cross,
        }

    def ponder_steps(self, inputs):
        """How many applications of the shared block each real position took (inference mode):
        {"encoder": [B, S], "decoder": [B, T]} float32, 0 on padding. Without adaptive
        computation every real position takes `universal_steps`; a fixed-depth model, the
        number of layers."""
        config = self.model_config
        if not config.adaptive_computation:
            source = ops.cast(padding_mask(inputs["source_ids"], config.pad_id), "float32")
            target = ops.cast(padding_mask(inputs["target_ids"], config.pad_id), "float32")
            return {
                "encoder": source * (config.universal_steps or config.num_encoder_layers),
                "decoder": target * (config.universal_steps or config.num_decoder_layers),
            }
        encoder_output, source_mask, encoder_ponder = self.encode(
            inputs["source_ids"], training=False, return_ponder=True
        )
        _, decoder_ponder = self.decode(
            inputs["target_ids"], encoder_output, source_mask, training=False, return_ponder=True
        )
        return {"encoder": encoder_ponder["steps"], "decoder": decoder_ponder["steps"]}

    # Incremental decoding -------------------------------------------------------------------

    def start_decoding(self, encoder_output, max_length):
        """Caches for `decode_step`: (empty self-attention cache, cross-attention keys/values)."""
        batch_size = ops.shape(encoder_output)[0]
        return (
            self.decoder.empty_self_attention_cache(batch_size, max_length),
            self.decoder.project_cross_attention_cache(encoder_output),
        )

    def decode_step(self, token_ids, index, self_attention_cache, cross_attention_cache, source_mask):
        """Decodes position `index` from its input token [B, 1], using and extending the cache.

        Returns (float32 logits [B, V], updated self-attention cache).
        """
        x = self._embed(self.target_embedding, self.target_positions, token_ids, index, False)
        cache_length = ops.shape(self_attention_cache[0][0])[2]  # (B, h, L, d_head)
        decoded, self_attention_cache = self.decoder(
            x,
            None,
            # The query at `index` may attend to cache positions 0..index.
            self_attention_mask=causal_mask(1, cache_length, query_offset=index),  # (1, 1, L)
            cross_attention_mask=source_mask,
            self_attention_cache=self_attention_cache,
            cache_update_index=index,
            cross_attention_cache=cross_attention_cache,
            training=False,
        )
        return self._logits(decoded)[:, 0, :], self_attention_cache

    # Helpers ---------------------------------------------------------------------------------

    def _embed(self, embedding, positions, token_ids, start_index, training, segments=None):
        position_ids = None if segments is None else segment_positions(segments)
        return embed_tokens(
            embedding, positions, self.embedding_dropout, token_ids, start_index, training,
            position_ids,
        )

    def _logits(self, hidden):
        if self.output_projection is None:
            logits = self.target_embedding.attend(hidden)
        else:
            logits = self.output_projection(hidden)
        return ops.cast(logits, "float32")  # (B, T, V): the loss wants float32 under mixed precision
