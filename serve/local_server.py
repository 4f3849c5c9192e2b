"""A stand-in for TF Serving on machines that cannot run its image.

It loads the exported SavedModels with plain TensorFlow (+ tensorflow_text) and answers the same
REST endpoints as `tensorflow_model_server`, with the same request and response formats:

    GET  /v1/models/NAME[/versions/V]             model status
    GET  /v1/models/NAME[/versions/V]/metadata    signature defs
    POST /v1/models/NAME[/versions/V]:predict     {"instances": [...]} or {"inputs": ...}

and the gRPC PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus).
It takes tensorflow_model_server's flags (--port, --rest_api_port, --model_name,
--model_base_path, --model_config_file, --file_system_poll_wait_seconds), serves requests
concurrently, polls the base paths and loads new versions as they appear (the export renames a
finished version into place, so a half-written one is never seen). It binds to 127.0.0.1 unless
--host says otherwise and bounds what it accepts (body size, instances per request, input
length) with a 4xx error. It is the test and development server, not the production one.
"""

import argparse
import base64
import binascii
import json
import logging
import os
import re
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the SentencePiece ops the export uses)
from google.protobuf import json_format, text_format  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

log = logging.getLogger("local_server")

DEFAULT_SIGNATURE = "serving_default"
DRAIN_LIMIT = 64 * 1024 * 1024


class ServingError(Exception):
    """A request that cannot be answered; `code` is the HTTP status, `grpc` the gRPC code name."""

    def __init__(self, message, code=400, grpc="INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code
        self.grpc = grpc


def not_found(message):
    return ServingError(message, 404, "NOT_FOUND")


# Models and versions ---------------------------------------------------------------------------


class Servable:
    """One loaded version of a model."""

    def __init__(self, name, version, path):
        self.name = name
        self.version = version
        self.path = path
        self.loaded = tf.saved_model.load(path)
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
        # TF Serving leaves the init op out of the signatures it reports.
        self.signature_defs = {
            key: value
            for key, value in saved_model.meta_graphs[0].signature_def.items()
            if not key.startswith("__")
        }
        self.functions = {key: self.loaded.signatures[key] for key in self.signature_defs}

    def signature(self, name):
        name = name or DEFAULT_SIGNATURE
        if name not in self.functions:
            raise ServingError(
                f'Serving signature name: "{name}" not found in signature def', 400, "INVALID_ARGUMENT"
            )
        return name, self.functions[name], self.signature_defs[name]

    def run(self, signature_name, inputs):
        """inputs: {input name: numpy array} -> {output name: numpy array}."""
        name, function, signature_def = self.signature(signature_name)
        expected = set(signature_def.inputs)
        if set(inputs) != expected:
            raise ServingError(
                f"Signature {name!r} takes inputs {sorted(expected)}; received {sorted(inputs)}."
            )
        tensors = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(signature_def.inputs[key].dtype)
            try:
                tensors[key] = tf.constant(value, dtype=dtype)
            except (TypeError, ValueError) as error:
                raise ServingError(f"Input {key!r} is not a {dtype.name} tensor: {error}") from None
        try:
            outputs = function(**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise ServingError(error.message) from None
        return {key: value.numpy() for key, value in outputs.items()}


class VersionPolicy:
    """TF Serving's model_version_policy: latest N (default 1), all, or specific versions."""

    def __init__(self, kind="latest", count=1, versions=()):
        self.kind, self.count, self.versions = kind, count, set(versions)

    @classmethod
    def from_proto(cls, config):
        if not config.HasField("model_version_policy"):
            return cls()
        policy = config.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            return cls("all")
        if which == "specific":
            return cls("specific", versions=policy.specific.versions)
        return cls("latest", count=policy.latest.num_versions or 1)

    def select(self, versions):
        versions = sorted(versions)
        if self.kind == "all":
            return versions
        if self.kind == "specific":
            return [v for v in versions if v in self.versions]
        return versions[-self.count :]


class Model:
    """A named model: its base path, version policy and loaded versions."""

    def __init__(self, name, base_path, policy):
        self.name = name
        self.base_path = base_path
        self.policy = policy
        self.servables = {}
        self.errors = {}
        self.lock = threading.Lock()

    def available_versions(self):
        if not os.path.isdir(self.base_path):
            return []
        return [
            int(entry)
            for entry in os.listdir(self.base_path)
            if entry.isdigit() and os.path.exists(os.path.join(self.base_path, entry, "saved_model.pb"))
        ]

    def refresh(self):
        wanted = set(self.policy.select(self.available_versions()))
        for version in sorted(wanted - set(self.servables) - set(self.errors)):
            path = os.path.join(self.base_path, str(version))
            try:
                servable = Servable(self.name, version, path)
            except Exception as error:  # a broken version must not take the server down
                log.error("could not load %s version %s: %s", self.name, version, error)
                self.errors[version] = str(error)
                continue
            with self.lock:
                self.servables[version] = servable
            log.info("serving %s version %s from %s", self.name, version, path)
        with self.lock:
            for version in set(self.servables) - wanted:
                del self.servables[version]
                log.info("unloaded %s version %s", self.name, version)

    def get(self, version=None):
        with self.lock:
            if not self.servables:
                raise not_found(f"Servable not found for request: Latest({self.name})")
            if version is None:
                return self.servables[max(self.servables)]
            if version not in self.servables:
                raise not_found(
                    f"Servable not found for request: Specific({self.name}, {version})"
                )
            return self.servables[version]

    def status(self, version=None):
        with self.lock:
            versions = sorted(set(self.servables) | set(self.errors), reverse=True)
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {self.name}")
                versions = [version]
            statuses = []
            for v in versions:
                if v in self.servables:
                    statuses.append((v, "AVAILABLE", "OK", ""))
                else:
                    statuses.append((v, "END", "UNKNOWN", self.errors[v]))
        if not statuses:
            raise not_found(f"Could not find any versions of model {self.name}")
        return statuses


class ModelServer:
    """The models, their polling thread, and the request logic both front ends share."""

    def __init__(self, models, limits, poll_seconds=1.0):
        self.models = {model.name: model for model in models}
        self.limits = limits
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()

    def start(self):
        for model in self.models.values():
            model.refresh()
        if self.poll_seconds > 0:
            threading.Thread(target=self._poll, daemon=True, name="version-poller").start()

    def stop(self):
        self._stop.set()

    def _poll(self):
        while not self._stop.wait(self.poll_seconds):
            for model in self.models.values():
                try:
                    model.refresh()
                except Exception as error:
                    log.error("polling %s failed: %s", model.name, error)

    def model(self, name):
        if name not in self.models:
            raise not_found(f"Servable not found for request: Latest({name})")
        return self.models[name]

    def check_texts(self, values):
        """Bounds on a batch of inputs (bytes)."""
        if len(values) == 0:
            raise ServingError("The request holds no instances.")
        if len(values) > self.limits["max_instances"]:
            raise ServingError(
                f"{len(values)} instances exceed this server's limit of "
                f"{self.limits['max_instances']} per request.",
                413,
                "RESOURCE_EXHAUSTED",
            )
        longest = max(len(v) for v in values)
        if longest > self.limits["max_input_bytes"]:
            raise ServingError(
                f"An input of {longest} bytes exceeds this server's limit of "
                f"{self.limits['max_input_bytes']} bytes.",
                413,
                "RESOURCE_EXHAUSTED",
            )


# REST ------------------------------------------------------------------------------------------

ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?$"
)


def decode_string(value, where):
    """A JSON string or {"b64": ...} -> bytes."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise ServingError(f"{where}: 'b64' is not valid base64.") from None
    raise ServingError(f"{where}: expected a string (or {{\"b64\": ...}}), received {json.dumps(value)[:60]}.")


def parse_predict(body, input_names):
    """TF Serving's predict body -> (signature name, {input: [bytes]}, 'row' | 'columnar')."""
    if not isinstance(body, dict):
        raise ServingError("The request body must be a JSON object.")
    signature = body.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise ServingError("'signature_name' must be a string.")
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("Exactly one of 'instances' (row format) or 'inputs' (columnar) is expected.")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServingError("'instances' must be a list.")
        columns = {name: [] for name in input_names}
        for i, instance in enumerate(instances):
            if isinstance(instance, dict) and "b64" not in instance:
                if set(instance) != set(input_names):
                    raise ServingError(
                        f"instances[{i}] names {sorted(instance)}; the signature takes {sorted(input_names)}."
                    )
                for name in input_names:
                    columns[name].append(decode_string(instance[name], f"instances[{i}].{name}"))
            elif len(input_names) == 1:
                columns[input_names[0]].append(decode_string(instance, f"instances[{i}]"))
            else:
                raise ServingError(f"instances[{i}] must name the inputs {sorted(input_names)}.")
        return signature, columns, "row"
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != set(input_names):
            raise ServingError(f"'inputs' names {sorted(inputs)}; the signature takes {sorted(input_names)}.")
    elif len(input_names) == 1:
        inputs = {input_names[0]: inputs}
    else:
        raise ServingError(f"'inputs' must be an object naming {sorted(input_names)}.")
    columns = {}
    for name, values in inputs.items():
        if not isinstance(values, list):
            values = [values]
        columns[name] = [decode_string(v, f"inputs.{name}[{i}]") for i, v in enumerate(values)]
    return signature, columns, "columnar"


def jsonable(array):
    """An output array as JSON values of the same shape (strings decoded from UTF-8)."""
    if array.dtype.kind in ("S", "O"):
        decode = np.vectorize(lambda v: v.decode("utf-8", errors="replace"), otypes=[object])
        return decode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def make_rest_handler(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tfx-transformer-local-server"

        def log_message(self, format, *args):  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

        def reply(self, code, payload):
            data = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_request(self, method):
            try:
                route = ROUTE.match(self.path.split("?", 1)[0])
                if not route:
                    raise not_found(f"Malformed request: {method} {self.path}")
                if route["label"]:
                    raise not_found(f"Unrecognized servable version label: {route['label']}")
                model = server.model(route["name"])
                version = int(route["version"]) if route["version"] else None
                if method == "GET" and route["verb"] is None:
                    if route["metadata"]:
                        return self.reply(200, metadata_json(model, version))
                    return self.reply(200, status_json(model, version))
                if method == "POST" and route["verb"] == "predict":
                    return self.reply(200, self.predict(model, version))
                if method == "POST" and route["verb"] in ("classify", "regress"):
                    raise ServingError(f"{route['verb']} is not supported: the export is a predict signature.")
                raise ServingError(f"Malformed request: {method} {self.path}", 405, "UNIMPLEMENTED")
            except ServingError as error:
                self.reply(error.code, {"error": str(error)})
            except Exception as error:  # never a dropped connection: a 500 with the reason
                log.exception("request failed")
                self.reply(500, {"error": f"Internal error: {error}"})

        def read_body(self):
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise ServingError("A Content-Length header is required.", 411, "INVALID_ARGUMENT")
            length = int(length)
            if length > server.limits["max_request_bytes"]:
                self.close_connection = True
                # Drain a moderately large body, so the client, still sending, reads the 413
                # instead of a broken pipe; past DRAIN_LIMIT the connection is just closed.
                if length <= DRAIN_LIMIT:
                    remaining = length
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                raise ServingError(
                    f"A body of {length} bytes exceeds this server's limit of "
                    f"{server.limits['max_request_bytes']}.",
                    413,
                    "RESOURCE_EXHAUSTED",
                )
            raw = self.rfile.read(length)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ServingError(f"The body is not valid UTF-8 (byte {error.start}); send bytes as {{\"b64\": ...}}.") from None
            try:
                return json.loads(text)
            except json.JSONDecodeError as error:
                raise ServingError(f"JSON Parse error: {error}") from None

        def predict(self, model, version):
            body = self.read_body()
            servable = model.get(version)
            signature = body.get("signature_name") if isinstance(body, dict) else None
            name, _, signature_def = servable.signature(signature)
            input_names = sorted(signature_def.inputs)
            _, columns, style = parse_predict(body, input_names)
            for values in columns.values():
                server.check_texts(values)
            counts = {len(v) for v in columns.values()}
            if len(counts) != 1:
                raise ServingError("Every input must hold the same number of values.")
            arrays = {key: np.array(values, dtype=object) for key, values in columns.items()}
            outputs = servable.run(name, arrays)
            if style == "columnar":
                return {"outputs": {key: jsonable(value) for key, value in outputs.items()}}
            keys = sorted(outputs)
            columns_out = {key: jsonable(outputs[key]) for key in keys}
            rows = counts.pop()
            if len(keys) == 1:
                return {"predictions": columns_out[keys[0]]}
            return {"predictions": [{key: columns_out[key][i] for key in keys} for i in range(rows)]}

        def do_GET(self):  # noqa: N802
            self.handle_request("GET")

        def do_POST(self):  # noqa: N802
            self.handle_request("POST")

    return Handler


def status_json(model, version):
    return {
        "model_version_status": [
            {"version": str(v), "state": state, "status": {"error_code": code, "error_message": message}}
            for v, state, code, message in model.status(version)
        ]
    }


def signature_def_map(servable):
    from tensorflow_serving.apis import get_model_metadata_pb2

    return get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)


def metadata_json(model, version):
    servable = model.get(version)
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {
            "signature_def": json_format.MessageToDict(
                signature_def_map(servable), preserving_proto_field_name=True
            )
        },
    }


# gRPC ------------------------------------------------------------------------------------------


def make_grpc_server(server, address, workers):
    import grpc
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def abort(context, error):
        context.abort(getattr(grpc.StatusCode, error.grpc), str(error))

    def requested_version(spec):
        if spec.HasField("version_label"):
            raise not_found(f"Unrecognized servable version label: {spec.version_label}")
        return spec.version.value if spec.HasField("version") else None

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            try:
                model = server.model(request.model_spec.name)
                servable = model.get(requested_version(request.model_spec))
                name, _, _ = servable.signature(request.model_spec.signature_name)
                inputs = {}
                for key, proto in request.inputs.items():
                    array = tf.make_ndarray(proto)
                    if array.dtype.kind in ("S", "O"):
                        server.check_texts(list(array.reshape(-1)))
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
                abort(context, error)

        def GetModelMetadata(self, request, context):  # noqa: N802
            try:
                if list(request.metadata_field) != ["signature_def"]:
                    raise ServingError("Metadata field signature_def must be requested, and only it.")
                model = server.model(request.model_spec.name)
                servable = model.get(requested_version(request.model_spec))
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = model.name
                response.model_spec.version.value = servable.version
                response.metadata["signature_def"].Pack(signature_def_map(servable))
                return response
            except ServingError as error:
                abort(context, error)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):  # noqa: N802
            try:
                model = server.model(request.model_spec.name)
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

    limit = server.limits["max_request_bytes"]
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[("grpc.max_receive_message_length", limit)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), grpc_server)
    if grpc_server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return grpc_server


# Start-up --------------------------------------------------------------------------------------


def models_from_flags(args):
    if args.model_config_file:
        from tensorflow_serving.config import model_server_config_pb2

        with open(args.model_config_file, encoding="utf-8") as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        models = []
        for entry in config.model_config_list.config:
            if entry.model_platform not in ("", "tensorflow"):
                raise SystemExit(f"{args.model_config_file}: model_platform {entry.model_platform!r} is not tensorflow.")
            base = entry.base_path
            if not os.path.isabs(base):
                base = os.path.join(os.path.dirname(os.path.abspath(args.model_config_file)), base)
            models.append(Model(entry.name, base, VersionPolicy.from_proto(entry)))
        if not models:
            raise SystemExit(f"{args.model_config_file} configures no model.")
        return models
    if not args.model_base_path:
        raise SystemExit("Give --model_base_path (with --model_name) or --model_config_file.")
    return [Model(args.model_name, os.path.abspath(args.model_base_path), VersionPolicy())]


def build_parser():
    parser = argparse.ArgumentParser(
        description="Local stand-in for tensorflow_model_server (REST and gRPC)."
    )
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0: no gRPC)")
    add("--rest_api_port", type=int, default=8501, help="REST port (0: no REST)")
    add("--model_name", default="default", help="name of the model given by --model_base_path")
    add("--model_base_path", help="folder holding numbered versions")
    add("--model_config_file", help="ModelServerConfig in protobuf text format")
    add("--file_system_poll_wait_seconds", type=float, default=1.0,
        help="how often to look for new versions (0: only at start)")
    add("--rest_api_num_threads", type=int, default=16, help="gRPC worker threads")
    add("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    # tensorflow_model_server flags accepted so that a command line works with either server;
    # this one answers each request as it comes (no server-side batching).
    add("--enable_batching", nargs="?", const="true", help="accepted and ignored")
    add("--batching_parameters_file", help="accepted and ignored")
    add("--model_config_file_poll_wait_seconds", type=float, help="accepted and ignored")
    add("--max_request_bytes", type=int, default=8 * 1024 * 1024)
    add("--max_instances", type=int, default=256, help="instances per request")
    add("--max_input_bytes", type=int, default=1024 * 1024, help="bytes per input text")
    return parser


def serve(argv=None, ready=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    limits = {
        "max_request_bytes": args.max_request_bytes,
        "max_instances": args.max_instances,
        "max_input_bytes": args.max_input_bytes,
    }
    if args.enable_batching or args.batching_parameters_file:
        log.info("--enable_batching/--batching_parameters_file are TF Serving's; ignored here")
    server = ModelServer(models_from_flags(args), limits, args.file_system_poll_wait_seconds)
    server.start()
    grpc_server = None
    if args.port:
        grpc_server = make_grpc_server(server, f"{args.host}:{args.port}", args.rest_api_num_threads)
        grpc_server.start()
        log.info("gRPC on %s:%s", args.host, args.port)
    http_server = None
    if args.rest_api_port:
        http_server = ThreadingHTTPServer((args.host, args.rest_api_port), make_rest_handler(server))
        http_server.daemon_threads = True
        threading.Thread(target=http_server.serve_forever, daemon=True, name="rest").start()
        log.info("REST on http://%s:%s", args.host, args.rest_api_port)
    if ready is not None:
        ready.set()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if http_server is not None:
            http_server.shutdown()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


if __name__ == "__main__":
    sys.exit(serve())
