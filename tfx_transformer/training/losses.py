"""Label-smoothed cross entropy and token accuracy, both blind to padding (label 0)."""

import keras
from keras import ops

from tfx_transformer.tokens import PAD_ID


def smoothed_token_losses(labels, logits, smoothing=0.1):
    """Per-token loss [B, T] (0 on padding) and the number of real tokens.

    The target distribution puts 1 - smoothing on the label and spreads `smoothing` evenly over
    the vocabulary (Szegedy et al. 2016, as the Transformer paper uses it).
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    # The fused softmax cross entropy computes the loss and its gradient in one pass over the
    # [B, T, V] logits; log_softmax + gather + mean takes several, and the gather's gradient is a
    # scatter into a zeroed [B, T, V] tensor. On TensorFlow this halves the loss's share of a step.
    if smoothing:
        vocab_size = logits.shape[-1] if logits.shape[-1] is not None else ops.shape(logits)[-1]
        target = ops.one_hot(labels, vocab_size) * (1.0 - smoothing) + smoothing / vocab_size
        losses = ops.categorical_crossentropy(target, logits, from_logits=True)
    else:
        losses = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    real = ops.cast(ops.not_equal(labels, PAD_ID), "float32")
    return losses * real, ops.sum(real)


@keras.saving.register_keras_serializable(package="tfx_transformer")
class LabelSmoothedCrossEntropy(keras.losses.Loss):
    """Mean label-smoothed cross entropy over the real (non-padding) tokens of a batch."""

    def __init__(self, smoothing=0.1, name="label_smoothed_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"`smoothing` must be in [0, 1). Received: smoothing={smoothing}")
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        losses, count = smoothed_token_losses(y_true, y_pred, self.smoothing)
        # Per-row values whose batch mean is the mean over real tokens.
        rows = ops.cast(ops.shape(losses)[0], "float32")
        return ops.sum(losses, axis=-1) * rows / ops.maximum(count, 1.0)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def token_accuracy_counts(labels, logits):
    """(correct, real) token counts, padding excluded."""
    labels = ops.cast(labels, "int32")
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    real = ops.not_equal(labels, PAD_ID)
    correct = ops.logical_and(real, ops.equal(predicted, labels))
    return ops.sum(ops.cast(correct, "float32")), ops.sum(ops.cast(real, "float32"))


@keras.saving.register_keras_serializable(package="tfx_transformer")
class TokenAccuracy(keras.metrics.Metric):
    """Share of real (non-padding) target tokens predicted exactly."""

    def __init__(self, name="token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        correct, total = token_accuracy_counts(y_true, y_pred)
        self.correct.assign_add(correct)
        self.total.assign_add(total)

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
