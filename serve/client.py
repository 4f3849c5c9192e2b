"""A small client for TF Serving (or serve/local_server.py): REST and gRPC.

    python serve/client.py --model translator predict "seventy-one" "one hundred"
    python serve/client.py --model translator --grpc localhost:8500 predict "seventy-one"
    python serve/client.py --model translator metadata
    python serve/client.py --model translator status

As a library: `RestClient(url, model).predict(texts)` and `GrpcClient(target, model).predict(texts)`
return one dict of the signature's outputs per text: {"translation": ..., "score": ...} from a
translator, {"tokens": [...], "tags": [...], "length": n} from a tagger.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request


def rows_of(outputs):
    """Columns {name: [value per text]} -> one {name: value} per text, as REST's row format."""
    names = sorted(outputs)
    return [dict(zip(names, values)) for values in zip(*(outputs[name] for name in names))]


def _python(array):
    """A numpy output -> lists of str / int / float, like REST's JSON."""
    if array.dtype.kind in ("S", "O"):
        return _decode_nested(array.tolist())
    return array.tolist()


def _decode_nested(value):
    if isinstance(value, list):
        return [_decode_nested(v) for v in value]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class ServingClientError(RuntimeError):
    """The server answered with an error; `status` is the HTTP status or gRPC code name."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    """TF Serving's REST API: /v1/models/NAME[/versions/V][:predict|/metadata]."""

    def __init__(self, url="http://localhost:8501", model="default", version=None, timeout=60.0):
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.timeout = timeout

    def _path(self, suffix=""):
        path = f"{self.url}/v1/models/{self.model}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        return path + suffix

    def _request(self, url, body=None):
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            payload = error.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(payload).get("error", payload)
            except (json.JSONDecodeError, AttributeError):
                message = payload
            raise ServingClientError(error.code, message) from None

    def predict_raw(self, body):
        """POSTs a ready-made predict body (dict or bytes) and returns the decoded reply."""
        return self._request(self._path(":predict"), body)

    def predict(self, texts, signature_name=None, columnar=False):
        texts = list(texts)
        body = {"inputs": {"text": texts}} if columnar else {"instances": texts}
        if signature_name:
            body["signature_name"] = signature_name
        reply = self.predict_raw(body)
        if columnar:
            return rows_of(reply["outputs"])
        return reply["predictions"]

    def metadata(self):
        return self._request(self._path("/metadata"))

    def status(self):
        return self._request(self._path())


class GrpcClient:
    """TF Serving's gRPC PredictionService (tensorflow-serving-api)."""

    def __init__(self, target="localhost:8500", model="default", version=None, timeout=60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model = model
        self.version = version
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def _spec(self, spec, signature_name=None):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingClientError(error.code().name, error.details()) from None

    def predict(self, texts, signature_name=None):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        encoded = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string))
        response = self._call(self.stub.Predict, request)
        return rows_of(
            {name: _python(tf.make_ndarray(proto)) for name, proto in response.outputs.items()}
        )

    def metadata(self):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self.stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": {"name": response.model_spec.name, "version": str(response.model_spec.version.value)},
            "metadata": {
                "signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True)
            },
        }

    def status(self):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        response = self._call(stub.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def close(self):
        self.channel.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest", default="http://localhost:8501", help="REST base URL")
    parser.add_argument("--grpc", help="host:port of the gRPC API (instead of REST)")
    parser.add_argument("--model", default="default", help="model name on the server")
    parser.add_argument("--version", type=int, help="a specific version (default: the latest)")
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument("--columnar", action="store_true", help="REST 'inputs' format instead of 'instances'")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="translate or tag texts (arguments, or lines of stdin)")
    predict.add_argument("texts", nargs="*")
    sub.add_parser("metadata", help="the model's signatures")
    sub.add_parser("status", help="the model's versions and their states")
    args = parser.parse_args(argv)

    if args.grpc:
        client = GrpcClient(args.grpc, args.model, args.version)
    else:
        client = RestClient(args.rest, args.model, args.version)
    try:
        if args.command == "predict":
            texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
            kwargs = {"signature_name": args.signature}
            if args.columnar and not args.grpc:
                kwargs["columnar"] = True
            for text, result in zip(texts, client.predict(texts, **kwargs)):
                print(json.dumps({"text": text, **result}, ensure_ascii=False))
        elif args.command == "metadata":
            print(json.dumps(client.metadata(), indent=2))
        else:
            print(json.dumps(client.status(), indent=2))
    except ServingClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot reach the server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
