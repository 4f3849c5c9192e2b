"""TF Serving's gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), over the same `ModelServer` as the REST API. Needs the `serve` extra
(grpcio, tensorflow-serving-api)."""

import time
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from stand_in.errors import ServingError, not_found
from stand_in.models import DEFAULT_SIGNATURE
from stand_in.rest import signature_def_map


def abort(context, error):
    context.abort(getattr(grpc.StatusCode, error.grpc), str(error))

def requested_version(spec):
    if spec.HasField("version_label"):
        raise not_found(f"Unrecognized servable version label: {spec.version_label}")
    return spec.version.value if spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model_server):
        self.model_server = model_server

    def Predict(self, request, context):  # noqa: N802
        started, status = time.time(), "OK"
        try:
            model = self.model_server.model(request.model_spec.name)
            servable = model.get(requested_version(request.model_spec))
            name, _, _ = servable.signature(request.model_spec.signature_name)
            inputs = {}
            for key, proto in request.inputs.items():
                array = tf.make_ndarray(proto)
                if array.dtype.kind in ("S", "O"):
                    self.model_server.limits.check_texts(list(array.reshape(-1)))
                inputs[key] = array
            outputs = servable.run(name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = name
            wanted = set(request.output_filter) or set(outputs)
            for key, value in outputs.items():
                if key in wanted:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response
        except ServingError as error:
            status = error.grpc
            abort(context, error)
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.model_server.metrics.record(
                request.model_spec.name, request.model_spec.signature_name or DEFAULT_SIGNATURE,
                "gRPC", status, time.time() - started,
            )

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("Metadata field signature_def must be requested, and only it.")
            model = self.model_server.model(request.model_spec.name)
            servable = model.get(requested_version(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(signature_def_map(servable))
            return response
        except ServingError as error:
            abort(context, error)

class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, model_server):
        self.model_server = model_server

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            model = self.model_server.model(request.model_spec.name)
            version = request.model_spec.version.value if request.model_spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for v, state, code, message in model.status(version):
                status = response.model_version_status.add()
                status.version = v
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
                status.status.error_message = message
            return response
        except ServingError as error:
            abort(context, error)


def make_grpc_server(model_server, address, workers):
    limit = model_server.limits.max_request_bytes
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[("grpc.max_receive_message_length", limit)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(model_server), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(model_server), grpc_server)
    if grpc_server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return grpc_server
