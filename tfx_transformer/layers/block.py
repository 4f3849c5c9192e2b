"""What encoder and decoder blocks share: hyperparameters, residual + LayerNorm, the stacks' base."""

import keras

from tfx_transformer.layers.attention import SCORE_FUNCTIONS, MultiHeadAttention
from tfx_transformer.layers.dropout import Dropout
from tfx_transformer.layers.feed_forward import PositionwiseFeedForward
from tfx_transformer.layers.linformer import LinformerAttention
from tfx_transformer.layers.relative import RELATIVE_ATTENTION, relative_attention_layer
from tfx_transformer.layers.validation import check_choice, check_positive_int, check_rate


class TransformerBlockBase(keras.layers.Layer):
    """Sublayers wrapped in residual connections, post-LN (the paper) or pre-LN.

    post-LN: x = LayerNorm(x + Dropout(sublayer(x)))
    pre-LN:  x = x + Dropout(sublayer(LayerNorm(x)))

    `dropout` drops the sublayers' outputs (above); inside them, `attention_dropout` drops the
    attention weights and `ffn_dropout` the feed-forward network's activations (None: `dropout`;
    0 for both is the paper's setting). OpenNMT-tf names them alike; fairseq's are
    --attention-dropout and --activation-dropout.

    `relative_attention` ("shaw" or "tener", see `tfx_transformer.layers.relative`) makes the
    self-attention position-aware; cross-attention stays content-only (a distance between a
    source and a target position means nothing).

    `linformer_length` (k) makes non-causal self-attention (the encoder's) Linformer attention
    over sequences of up to `linformer_max_length`; causal self-attention stays full.
    """

    def __init__(
        self,
        d_model,
        num_heads,
        d_ff,
        dropout=0.1,
        attention_dropout=None,
        ffn_dropout=None,
        norm_first=False,
        activation="relu",
        score="scaled_dot",
        layer_norm_epsilon=1e-6,
        relative_attention=None,
        max_relative_distance=16,
        relative_values=True,
        linformer_length=None,
        linformer_max_length=None,
        linformer_share_projection=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("d_model", d_model)
        check_positive_int("num_heads", num_heads)
        check_positive_int("d_ff", d_ff)
        check_rate("dropout", dropout)
        for name, rate in (("attention_dropout", attention_dropout), ("ffn_dropout", ffn_dropout)):
            if rate is not None:
                check_rate(name, rate)
        check_choice("score", score, SCORE_FUNCTIONS)
        if relative_attention is not None:
            check_choice("relative_attention", relative_attention, RELATIVE_ATTENTION)
        check_positive_int("max_relative_distance", max_relative_distance)
        if linformer_length is not None:
            check_positive_int("linformer_length", linformer_length)
            check_positive_int("linformer_max_length", linformer_max_length)
            if relative_attention is not None:
                raise ValueError("Linformer attention does not combine with relative positions.")
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.ffn_dropout = ffn_dropout
        self.norm_first = norm_first
        self.activation = activation
        self.score = score
        self.layer_norm_epsilon = layer_norm_epsilon
        self.relative_attention = relative_attention
        self.max_relative_distance = max_relative_distance
        self.relative_values = relative_values
        self.linformer_length = linformer_length
        self.linformer_max_length = linformer_max_length
        self.linformer_share_projection = linformer_share_projection

    def _attention_layer(self, name, self_attention=False, causal=True):
        kwargs = dict(
            d_model=self.d_model,
            score=self.score,
            dropout=self.dropout if self.attention_dropout is None else self.attention_dropout,
            dtype=self.dtype_policy,
            name=name,
        )
        if self_attention and not causal and self.linformer_length is not None:
            return LinformerAttention(
                self.num_heads,
                max_length=self.linformer_max_length,
                projected_length=self.linformer_length,
                share_projection=self.linformer_share_projection,
                **kwargs,
            )
        if self_attention and self.relative_attention is not None:
            return relative_attention_layer(
                self.relative_attention,
                self.num_heads,
                max_distance=self.max_relative_distance,
                use_values=self.relative_values,
                **kwargs,
            )
        return MultiHeadAttention(self.num_heads, **kwargs)

    def _feed_forward_layer(self):
        return PositionwiseFeedForward(
            self.d_ff,
            activation=self.activation,
            dropout=self.dropout if self.ffn_dropout is None else self.ffn_dropout,
            dtype=self.dtype_policy,
            name="feed_forward",
        )

    def _norm_layer(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _dropout_layer(self, name):
        return Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def _build_sublayer(self, name, sublayer, x_shape, *shapes):
        """Builds `sublayer` and its LayerNorm and dropout as `name`, `name_norm`, `name_dropout`."""
        sublayer.build(x_shape, *shapes)
        norm = self._norm_layer(f"{name}_norm")
        norm.build(x_shape)
        setattr(self, name, sublayer)
        setattr(self, f"{name}_norm", norm)
        setattr(self, f"{name}_dropout", self._dropout_layer(f"{name}_dropout"))

    def _residual(self, x, norm, dropout, sublayer, training):
        """Applies `sublayer` (returning (y, extras)) with its residual and LayerNorm."""
        if self.norm_first:
            y, extras = sublayer(norm(x))
            return x + dropout(y, training=training), extras
        y, extras = sublayer(x)
        return norm(x + dropout(y, training=training)), extras

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "ffn_dropout": self.ffn_dropout,
                "norm_first": self.norm_first,
                "activation": self.activation,
                "score": self.score,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "relative_attention": self.relative_attention,
                "max_relative_distance": self.max_relative_distance,
                "relative_values": self.relative_values,
                "linformer_length": self.linformer_length,
                "linformer_max_length": self.linformer_max_length,
                "linformer_share_projection": self.linformer_share_projection,
            }
        )
        return config


class TransformerStackBase(keras.layers.Layer):
    """N identical blocks; with pre-LN a final LayerNorm (the blocks leave their output unnormalized)."""

    block_class = None

    def __init__(self, num_layers, **block_kwargs):
        layer_kwargs = {
            key: block_kwargs.pop(key)
            for key in ("name", "dtype", "trainable", "autocast")
            if key in block_kwargs
        }
        super().__init__(**layer_kwargs)
        check_positive_int("num_layers", num_layers)
        self.num_layers = num_layers
        self.block_kwargs = block_kwargs
        self.blocks = [
            self.block_class(**block_kwargs, dtype=self.dtype_policy, name=f"block_{i}")
            for i in range(num_layers)
        ]
        self.norm_first = block_kwargs.get("norm_first", False)
        self.final_norm = None
        if self.norm_first:
            self.final_norm = self.blocks[0]._norm_layer("final_norm")

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, **self.block_kwargs})
        return config
