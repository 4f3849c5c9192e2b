"""Token embeddings (scaled by sqrt(d_model), reusable as the output projection) and positions.

Position layers return the position signal for their input, shaped like it, for the caller to
add: `x = embed(ids); x = x + positions(x)`. `start_index` gives the absolute position of the
first input row, which incremental decoding needs; `position_ids` [B, T] gives every token's
own position instead, which packed rows need (each packed example counts from 0).
"""

import math

import keras
from keras import ops

from tfx_transformer.layers.validation import check_positive_int


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TokenEmbedding(keras.layers.Layer):
    """Token embedding multiplied by sqrt(d_model), as in the paper (section 3.4).

    `attend(x)` multiplies by the transposed embedding matrix, so one matrix can serve as the
    source embedding, the target embedding and the pre-softmax projection.
    """

    def __init__(self, vocab_size, d_model, scale=True, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("d_model", d_model)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.scale = scale
        # With the embedding scaled by sqrt(d_model), N(0, d_model^-1/2) gives unit-variance rows,
        # the usual choice for tied embeddings.
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
            or keras.initializers.RandomNormal(stddev=d_model**-0.5)
        )

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.d_model),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        embedded = ops.take(ops.cast(self.embeddings, self.compute_dtype), token_ids, axis=0)
        if self.scale:
            embedded = embedded * ops.cast(math.sqrt(self.d_model), self.compute_dtype)
        return embedded  # (B, T, d_model)

    def attend(self, x):
        """[..., d_model] -> [..., vocab_size] scores against every token embedding."""
        return ops.matmul(x, ops.transpose(ops.cast(self.embeddings, x.dtype)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.d_model,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "scale": self.scale,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config


def sinusoidal_encoding(length, depth, start_index=0, max_wavelength=10000.0, dtype="float32"):
    """The paper's encoding [length, depth]: PE(p, 2i) = sin(p / w^(2i/d)), PE(p, 2i+1) = cos(same)."""
    positions = ops.arange(length) + start_index  # (T,)
    return sinusoid(positions, depth, max_wavelength, dtype)


def sinusoid(positions, depth, max_wavelength=10000.0, dtype="float32"):
    """The sinusoidal encoding of any (also negative) positions: [...] -> [..., depth].

    Relative attention encodes signed distances with it: sin is odd, so +k and -k differ.
    """
    positions = ops.cast(positions, "float32")
    dims = ops.arange(depth)  # (d,)
    pair_index = ops.cast(dims // 2 * 2, "float32")  # 2i for both members of a pair
    inverse_frequency = ops.power(
        ops.cast(max_wavelength, "float32"), -pair_index / float(depth)
    )  # (d,)
    angles = ops.expand_dims(positions, -1) * inverse_frequency  # (..., d)
    encoding = ops.where(ops.equal(dims % 2, 0), ops.sin(angles), ops.cos(angles))
    return ops.cast(encoding, dtype)


@keras.saving.register_keras_serializable(package="tfx_transformer")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Fixed sinusoidal positions (no weights): sin on even feature indices, cos on odd ones."""

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, inputs, start_index=0, position_ids=None):
        length, depth = ops.shape(inputs)[-2], inputs.shape[-1]
        if position_ids is not None:
            return sinusoid(position_ids, depth, self.max_wavelength, self.compute_dtype)
        encoding = sinusoidal_encoding(
            length, depth, start_index, self.max_wavelength, self.compute_dtype
        )  # (T, d)
        return ops.broadcast_to(encoding, ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config


@keras.saving.register_keras_serializable(package="tfx_transformer")
class LearnedPositionEmbedding(keras.layers.Layer):
    """One learned vector per position, for positions 0 .. max_length - 1."""

    def __init__(self, max_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_length", max_length)
        self.max_length = max_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.max_length, input_shape[-1]),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0, position_ids=None):
        length, depth = ops.shape(inputs)[-2], inputs.shape[-1]
        table = ops.cast(self.position_embeddings, self.compute_dtype)
        if position_ids is not None:
            # The packer keeps every example within max_length, so each id indexes the table.
            return ops.take(table, ops.cast(position_ids, "int32"), axis=0)  # (B, T, d)
        if isinstance(length, int) and isinstance(start_index, int):
            if start_index + length > self.max_length:
                raise ValueError(
                    f"Positions up to {start_index + length - 1} were asked of a "
                    f"LearnedPositionEmbedding with max_length={self.max_length}; truncate the "
                    "input or build the model with a larger max_length."
                )
        positions = ops.slice(table, [start_index, 0], [length, depth])  # (T, d)
        return ops.broadcast_to(positions, ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
