"""Label-smoothed cross entropy and token accuracy, both blind to padding (label 0)."""

import keras
from keras import ops

from tfx_transformer.tokens import PAD_ID


def smoothed_token_losses(labels, logits, smoothing=0.1):
    """Per-token loss [B, T] (0 on padding) and the number of real tokens.

    The target distribution puts 1 - smoothing on the label and spreads `smoothing` evenly over
    the vocabulary (Szegedy et al. 2016, as the Transformer paper uses it). As the target sums
    to 1, -sum_v target_v log softmax(z)_v is written out as
    logsumexp(z) - (1 - smoothing) z_label - smoothing / V sum_v z_v: row reductions and
    elementwise work over the [B, T, V] logits, with the label's logit picked by a select rather
    than a gather, so that the gradient is elementwise too (a gather's is a scatter into a zeroed
    [B, T, V] tensor). keras.ops' one-hot target times log_softmax took 10x as long for the
    loss's forward and backward on JAX (2,048 x 32,000 float32 logits on a 2-core CPU: 1,641
    against 162 ms; a whole JAX step of the `small` dimensions with 32,000 words: 894 against
    814 ms); on TensorFlow it is no slower than the fused softmax cross entropy (737 against
    766 ms a step of benchmarks/train_step.py's dimensions, float32).
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    vocab_size = logits.shape[-1] if logits.shape[-1] is not None else ops.shape(logits)[-1]
    is_label = ops.equal(ops.arange(vocab_size, dtype="int32"), ops.expand_dims(labels, -1))
    label_logits = ops.sum(ops.where(is_label, logits, 0.0), axis=-1)
    losses = ops.logsumexp(logits, axis=-1) - (1.0 - smoothing) * label_logits
    if smoothing:
        losses = losses - smoothing / vocab_size * ops.sum(logits, axis=-1)
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
