"""A stand-in for TF Serving on machines that cannot run its image.

It loads the exported SavedModels with plain TensorFlow (+ tensorflow_text) and answers the same
REST endpoints as `tensorflow_model_server`, with the same request and response formats:

    GET  /v1/models/NAME[/versions/V]             model status
    GET  /v1/models/NAME[/versions/V]/metadata    signature defs
    POST /v1/models/NAME[/versions/V]:predict     {"instances": [...]} or {"inputs": ...}

and the gRPC PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus).
This file is the command line and start-up; the parts are in serve/stand_in/.
It takes tensorflow_model_server's flags (--port, --rest_api_port, --model_name,
--model_base_path, --model_config_file, --file_system_poll_wait_seconds), serves requests
concurrently, polls the base paths and loads new versions as they appear (the export renames a
finished version into place, so a half-written one is never seen). It binds to 127.0.0.1 unless
--host says otherwise and bounds what it accepts (body size, instances per request, input
length) with a 4xx error. It is the test and development server, not the production one.
"""

import argparse
import logging
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from google.protobuf import text_format  # noqa: E402
from stand_in.limits import Limits  # noqa: E402
from stand_in.models import Model, ModelServer, VersionPolicy  # noqa: E402
from stand_in.rest import RestServer  # noqa: E402

log = logging.getLogger("local_server")


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
    add("--rest_api_num_threads", type=int, default=16,
        help="worker threads of the gRPC server (REST answers each connection on a thread of its own)")
    add("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    # tensorflow_model_server flags accepted so that a command line works with either server;
    # this one answers each request as it comes (no server-side batching).
    add("--enable_batching", nargs="?", const="true", help="accepted and ignored")
    add("--batching_parameters_file", help="accepted and ignored")
    add("--model_config_file_poll_wait_seconds", type=float, help="accepted and ignored")
    add("--monitoring_config_file",
        help="accepted; the metrics are always at /monitoring/prometheus/metrics")
    add("--max_request_bytes", type=int, default=8 * 1024 * 1024)
    add("--max_instances", type=int, default=256, help="instances per request")
    add("--max_input_bytes", type=int, default=1024 * 1024, help="bytes per input text")
    return parser


def serve(argv=None, ready=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    limits = Limits(args.max_request_bytes, args.max_instances, args.max_input_bytes)
    if args.enable_batching or args.batching_parameters_file:
        log.info("--enable_batching/--batching_parameters_file are TF Serving's; ignored here")
    server = ModelServer(models_from_flags(args), limits, args.file_system_poll_wait_seconds)
    server.start()
    grpc_server = None
    if args.port:
        from stand_in.grpc_service import make_grpc_server  # the serve extra, only when asked for

        grpc_server = make_grpc_server(server, f"{args.host}:{args.port}", args.rest_api_num_threads)
        grpc_server.start()
        log.info("gRPC on %s:%s", args.host, args.port)
    http_server = None
    if args.rest_api_port:
        http_server = RestServer((args.host, args.rest_api_port), server)
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
