"""Reading an export's warm-up requests (assets.extra/tf_serving_warmup_requests: PredictionLog
records in a TFRecord file), which the server replays before a version is AVAILABLE."""

import os

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def read_warmup_requests(version_dir):
    """[(signature name, {input name: numpy array})], in the file's order; [] without a file."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not os.path.exists(path):
        return []
    requests = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        requests.append((request.model_spec.signature_name or "serving_default", inputs))
    return requests
