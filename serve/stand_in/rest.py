"""TF Serving's REST API: status, metadata and predict, in its request and response formats.

    GET  /v1/models/NAME[/versions/V]             model status
    GET  /v1/models/NAME[/versions/V]/metadata    signature defs
    POST /v1/models/NAME[/versions/V]:predict     {"instances": [...]} or {"inputs": ...}
"""

import base64
import binascii
import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from google.protobuf import json_format

from stand_in.errors import ServingError, not_found
from stand_in.models import DEFAULT_SIGNATURE

log = logging.getLogger("local_server")

DRAIN_LIMIT = 64 * 1024 * 1024


class RestServer(ThreadingHTTPServer):
    """An HTTP server whose handlers answer from `model_server`, a thread per connection."""

    daemon_threads = True
    # The listen backlog: socketserver's default of 5 resets connections as soon as a few dozen
    # clients connect at once, before a thread has accepted them.
    request_queue_size = 1024

    def __init__(self, address, model_server):
        self.model_server = model_server
        super().__init__(address, RestHandler)


ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
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


def requested_version(model, digits):
    """The version in a path, or None for the latest; one too long to exist is not found."""
    if not digits:
        return None
    if len(digits) > 18:
        raise not_found(f"Servable not found for request: Specific({model.name}, {digits[:20]}...)")
    return int(digits)


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API over the `ModelServer` of its `RestServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "tfx-transformer-local-server"

    @property
    def model_server(self):
        return self.server.model_server

    def log_message(self, format, *args):  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def reply(self, code, payload, headers=()):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def reply_text(self, code, text):
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """The base class's own errors (a malformed request line, an unknown method) as JSON."""
        self.close_connection = True
        self.reply(code, {"error": message or self.responses.get(code, ("Error",))[0]})

    def not_allowed(self):
        self.close_connection = True
        self.reply(
            405, {"error": f"Method {self.command} is not allowed: GET (status, metadata) or POST (predict)."},
            headers=[("Allow", "GET, POST")],
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_HEAD = do_CONNECT = not_allowed  # noqa: N815

    def handle_request(self, method):
        path = self.path.split("?", 1)[0]
        if method == "GET" and path.rstrip("/") == "/monitoring/prometheus/metrics":
            return self.reply_text(200, self.model_server.metrics.prometheus_text())
        started, self.signature_name, status = time.time(), DEFAULT_SIGNATURE, "OK"
        route = ROUTE.match(path)
        try:
            if not route:
                raise not_found(f"Malformed request: {method} {self.path}")
            if route["label"]:
                raise not_found(f"Unrecognized servable version label: {route['label']}")
            model = self.model_server.model(route["name"])
            version = requested_version(model, route["version"])
            if method == "GET" and route["verb"] is None:
                if route["metadata"]:
                    return self.reply(200, metadata_json(model, version))
                return self.reply(200, status_json(model, version))
            if method == "POST" and route["verb"] == "predict":
                code, body = 200, self.predict(model, version)
            elif method == "POST" and route["verb"] in ("classify", "regress"):
                raise ServingError(f"{route['verb']} is not supported: the export is a predict signature.")
            else:
                raise ServingError(f"Malformed request: {method} {self.path}", 405, "UNIMPLEMENTED")
        except ServingError as error:
            status = error.grpc  # the same status names as the gRPC front end records
            code, body = error.code, {"error": str(error)}
        except Exception as error:  # never a dropped connection: a 500 with the reason
            status = "INTERNAL"
            log.exception("request failed")
            code, body = 500, {"error": f"Internal error: {error}"}
        # Counted before the answer goes out: a client that reads the metrics once answered
        # finds its request there.
        if method == "POST" and route and route["verb"]:
            self.model_server.metrics.record(
                route["name"], self.signature_name, "REST", status, time.time() - started
            )
        self.reply(code, body)

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is None or not re.fullmatch(r"[0-9]{1,18}", length.strip()):
            raise ServingError(
                "A Content-Length header (a byte count) is required.", 411, "INVALID_ARGUMENT"
            )
        length = int(length)
        if length > self.model_server.limits.max_request_bytes:
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
                f"{self.model_server.limits.max_request_bytes}.",
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
        except RecursionError:
            raise ServingError("JSON Parse error: the body is nested too deeply.") from None

    def predict(self, model, version):
        body = self.read_body()
        servable = model.get(version)
        signature = body.get("signature_name") if isinstance(body, dict) else None
        if signature is not None and not isinstance(signature, str):
            raise ServingError("'signature_name' must be a string.")
        self.signature_name = signature or DEFAULT_SIGNATURE
        name, _, signature_def = servable.signature(signature)
        input_names = sorted(signature_def.inputs)
        _, columns, style = parse_predict(body, input_names)
        for values in columns.values():
            self.model_server.limits.check_texts(values)
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
