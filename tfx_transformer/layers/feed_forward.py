"""The position-wise feed-forward network: Linear -> activation -> dropout -> Linear."""

import keras

from tfx_transformer.layers.dropout import Dropout
from tfx_transformer.layers.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="tfx_transformer")
class PositionwiseFeedForward(keras.layers.Layer):
    """FFN(x) = W_2 act(W_1 x + b_1) + b_2, applied to every position alike (paper eq. 2)."""

    def __init__(self, d_ff, activation="relu", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("d_ff", d_ff)
        check_rate("dropout", dropout)
        self.d_ff = d_ff
        self.activation = keras.activations.get(activation)
        self.dropout = dropout

    def build(self, input_shape):
        self.inner = keras.layers.Dense(
            self.d_ff, activation=self.activation, dtype=self.dtype_policy, name="inner"
        )
        self.inner.build(input_shape)
        self.inner_dropout = Dropout(self.dropout, dtype=self.dtype_policy)
        self.outer = keras.layers.Dense(input_shape[-1], dtype=self.dtype_policy, name="outer")
        self.outer.build(tuple(input_shape[:-1]) + (self.d_ff,))
        self.built = True

    def call(self, x, training=None):
        return self.outer(self.inner_dropout(self.inner(x), training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_ff": self.d_ff,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
            }
        )
        return config
