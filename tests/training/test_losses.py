import keras
import numpy as np
import pytest
from keras import ops

from tfx_transformer.training.losses import (
    LabelSmoothedCrossEntropy,
    TokenAccuracy,
    smoothed_token_losses,
    token_accuracy_counts,
)
from tfx_transformer.training.optimization import TransformerSchedule, make_optimizer


def numpy_smoothed_loss(labels, logits, eps):
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    v = logits.shape[-1]
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == 0:
                continue
            target = np.full(v, eps / v)
            target[labels[b, t]] += 1 - eps
            total += -(target * log_probs[b, t]).sum()
            count += 1
    return total / count


def test_label_smoothed_loss_matches_numpy_and_ignores_padding(rng):
    logits = rng.normal(size=(3, 4, 7)).astype("float32")
    labels = np.array([[1, 2, 0, 0], [3, 4, 5, 0], [6, 0, 0, 0]])
    expected = numpy_smoothed_loss(labels, logits, 0.1)
    loss = LabelSmoothedCrossEntropy(0.1)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    garbage = logits.copy()
    garbage[labels == 0] = 100.0  # logits at padded positions must not matter
    assert float(loss(labels, garbage)) == pytest.approx(expected, rel=1e-5)
    sums, count = smoothed_token_losses(labels, logits, 0.1)
    assert float(count) == 6
    assert float(ops.sum(sums)) / 6 == pytest.approx(expected, rel=1e-5)
    again = LabelSmoothedCrossEntropy.from_config(loss.get_config())
    assert again.smoothing == 0.1


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_values_and_gradient_match_the_smoothed_target(rng, smoothing):
    import tensorflow as tf

    logits = tf.constant(rng.normal(size=(2, 5, 9)).astype("float32"))
    labels = np.array([[1, 8, 3, 0, 0], [2, 2, 7, 5, 0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        sums, count = smoothed_token_losses(labels, logits, smoothing)
        total = tf.reduce_sum(sums)
    gradient = tape.gradient(total, logits).numpy()
    assert float(total) / float(count) == pytest.approx(
        numpy_smoothed_loss(labels, logits.numpy(), smoothing), rel=1e-5
    )
    # d loss / d logits = softmax - target at real tokens, nothing at padding.
    probs = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(-1, keepdims=True)
    target = np.full(probs.shape, smoothing / 9)
    np.put_along_axis(target, labels[..., None], 1 - smoothing + smoothing / 9, axis=-1)
    expected = (probs - target) * (labels != 0)[..., None]
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_loss_is_exact_for_large_logits(rng):
    # logsumexp shifts by the row's maximum: logits in the thousands (a diverging run, half
    # precision's range) give the stable value, not inf or nan.
    logits = (rng.normal(size=(2, 3, 11)) * 3000).astype("float32")
    labels = np.array([[4, 10, 0], [1, 0, 0]])
    sums, count = smoothed_token_losses(labels, logits, 0.1)
    shifted = logits.astype("float64") - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    target = np.full(logits.shape, 0.1 / 11)
    np.put_along_axis(target, labels[..., None], 0.9 + 0.1 / 11, axis=-1)
    expected = -(target * log_probs).sum(-1) * (labels != 0)
    np.testing.assert_allclose(ops.convert_to_numpy(sums), expected, rtol=1e-5)
    assert float(count) == 3


def test_token_accuracy_ignores_padding():
    labels = np.array([[1, 2, 0], [3, 0, 0]])
    logits = np.zeros((2, 3, 5), "float32")
    logits[0, 0, 1] = logits[0, 1, 4] = logits[1, 0, 3] = 1.0
    logits[0, 2, 0] = logits[1, 1, 0] = logits[1, 2, 0] = 1.0  # "right" on padding: not counted
    correct, total = token_accuracy_counts(labels, logits)
    assert (float(correct), float(total)) == (2.0, 3.0)
    metric = TokenAccuracy()
    metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_schedule_follows_the_paper_and_round_trips():
    schedule = TransformerSchedule(512, warmup_steps=4000)
    for step in (1, 100, 4000, 10000):
        expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        assert float(schedule(step - 1)) == pytest.approx(expected, rel=1e-5)
    peak = max(float(schedule(s)) for s in range(3990, 4010))
    assert float(schedule(3998)) == pytest.approx(peak, rel=1e-3)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert clone.get_config() == schedule.get_config()


def test_optimizer_uses_the_paper_adam_settings():
    optimizer = make_optimizer(64, 100)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.98, 1e-9)
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    schedule = restored.get_config()["learning_rate"]
    assert schedule["registered_name"] == "tfx_transformer>TransformerSchedule"
    assert schedule["config"] == {"d_model": 64, "warmup_steps": 100, "scale": 1.0}
    assert float(restored.learning_rate) == pytest.approx(float(TransformerSchedule(64, 100)(0)))
