"""What the package's models share: a `TransformerConfig` as their saved config, token
embeddings with absolute positions, and (tagger, language model) one stack of self-attention."""

import keras

from tfx_transformer.config import TransformerConfig
from tfx_transformer.layers import (
    Decoder,
    Dropout,
    Encoder,
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
    TokenEmbedding,
)
from tfx_transformer.layers.universal import UniversalDecoder, UniversalEncoder


def position_layer(config, name, dtype=None):
    """The layer that adds absolute positions to embeddings, or None when positions are relative
    (the self-attention layers see them then)."""
    if config.position == "learned":
        return LearnedPositionEmbedding(config.max_length, dtype=dtype, name=name)
    if config.position == "sinusoidal":
        return SinusoidalPositionEncoding(dtype=dtype, name="positions")
    return None


def make_stack(config, num_layers, decoder=False, dtype=None, name=None):
    """An encoder (or decoder) stack of `num_layers` blocks, or the universal one the config asks
    for (`universal_steps`)."""
    if config.universal_steps:
        stack_class = UniversalDecoder if decoder else UniversalEncoder
    else:
        stack_class = Decoder if decoder else Encoder
    return stack_class(**config.stack_kwargs(num_layers), dtype=dtype, name=name)


def ponder_kwargs(config, real_positions, return_ponder=False):
    """The call arguments only the universal stacks take: the padding their ACT must not ponder
    ([B, T] bool, True on real tokens) and, when asked, that they return the ponder statistics."""
    if not config.universal_steps:
        return {}
    return {"padding_mask": real_positions, **({"return_ponder": True} if return_ponder else {})}


def embed_tokens(embedding, positions, dropout, token_ids, start_index=0, training=None,
                 position_ids=None):
    """Token embedding, plus absolute positions when there are any, then dropout.
    `position_ids` [B, T]: every token's own position (packed rows) instead of `start_index`."""
    x = embedding(token_ids)  # (B, T, d_model)
    if positions is not None:
        if position_ids is None:
            x = x + positions(x, start_index=start_index)
        else:
            x = x + positions(x, position_ids=position_ids)
    return dropout(x, training=training)


class ConfiguredModel(keras.Model):
    """A model built from a `TransformerConfig` (or its dict), which is its saved config."""

    def __init__(self, config=None, **kwargs):
        if config is None:
            config = TransformerConfig()
        elif isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        elif not isinstance(config, TransformerConfig):
            raise TypeError(
                f"`config` must be a TransformerConfig or a dict. Received: {type(config).__name__}"
            )
        super().__init__(**kwargs)
        self.model_config = config

    def extra_config(self):
        """Constructor arguments besides the TransformerConfig."""
        return {}

    def get_config(self):
        return {
            "config": self.model_config.to_dict(),
            **self.extra_config(),
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = TransformerConfig.from_dict(config.pop("config"))
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(model_config, **config)


class SingleStackModel(ConfiguredModel):
    """Token embedding (+ absolute positions), dropout and one stack of self-attention blocks:
    what the tagger (an encoder) and the language model (causal blocks) share."""

    def __init__(self, config=None, num_layers_field="num_encoder_layers", stack_name="encoder", **kwargs):
        super().__init__(config, **kwargs)
        config = self.model_config
        self.token_embedding = TokenEmbedding(
            config.vocab_size, config.d_model, dtype=self.dtype_policy, name="token_embedding"
        )
        self.positions = position_layer(config, "positions", self.dtype_policy)
        self.embedding_dropout = Dropout(
            config.dropout, dtype=self.dtype_policy, name="embedding_dropout"
        )
        self.stack = make_stack(
            config, getattr(config, num_layers_field), dtype=self.dtype_policy, name=stack_name
        )

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.model_config.d_model)
        self.token_embedding.build((None, None))
        if self.positions is not None:
            self.positions.build(hidden_shape)
        self.stack.build(hidden_shape)
        self.built = True

    def embed(self, token_ids, training=None, position_ids=None):
        return embed_tokens(
            self.token_embedding, self.positions, self.embedding_dropout, token_ids, 0, training,
            position_ids,
        )
