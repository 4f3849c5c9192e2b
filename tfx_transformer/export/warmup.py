"""TF Serving's warm-up requests: `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
PredictionLog records that the server replays when it loads a version, before it reports the
version AVAILABLE, so that the first client request does not pay for tracing and allocation."""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def write_warmup_requests(version_dir, requests):
    """`requests`: [(signature name, {input name: array})], written as PredictLog records."""
    with tf.io.TFRecordWriter(os.path.join(version_dir, WARMUP_FILE)) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            for key, values in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(values, dtype=object)))
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(record.SerializeToString())
