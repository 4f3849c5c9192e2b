"""serve/client.py against serve/local_server.py over loopback, REST and gRPC."""

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import tensorflow as tf

from serve.client import GrpcClient, RestClient, ServingClientError

from tests import ROOT

TEXTS = ["seventy-one", "two hundred and forty-three", "one", "ninety-nine", "twelve"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(base, model_name, *flags):
    """serve/local_server.py on free loopback ports over the versions in `base`."""
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve" / "local_server.py"), f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", f"--model_name={model_name}", f"--model_base_path={base}",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    rest = RestClient(f"http://127.0.0.1:{rest_port}", model_name, timeout=30)
    deadline = time.time() + 120
    while True:
        try:
            rest.status()
            break
        except (OSError, ServingClientError):
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail("server did not start: " + process.stdout.read()[-3000:])
            time.sleep(0.3)
    grpc_client = GrpcClient(f"127.0.0.1:{grpc_port}", model_name, timeout=30)
    try:
        yield {"rest": rest, "grpc": grpc_client, "base": base, "process": process,
               "rest_url": f"http://127.0.0.1:{rest_port}"}
    finally:
        grpc_client.close()
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(exported_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "translator"
    shutil.copytree(exported_run["version"], base / "1")
    with running_server(
        base, "translator", "--file_system_poll_wait_seconds=0.5", "--max_request_bytes=4000000"
    ) as running:
        yield running


def test_a_tagger_is_served_like_a_translator(tmp_path):
    import tfx_transformer as tt
    from tfx_transformer.export import export_module
    from tfx_transformer.tasks.tagging.serving import TaggingServingModule
    from tfx_transformer.models import TransformerTagger
    from tfx_transformer.tasks.tagging.data import entities_split
    from tfx_transformer.tasks.tagging.vocabulary import TagVocabulary

    vocabulary = TagVocabulary.build(entities_split("train", sizes={"train": 200}))
    config = tt.TransformerConfig.preset(
        "tiny", vocab_size=vocabulary.vocab_size, num_encoder_layers=1, position="shaw"
    )
    model = TransformerTagger(config, num_tags=vocabulary.num_tags)
    export_module(TaggingServingModule(model, vocabulary), str(tmp_path / "tagger"))
    texts = ["Anna Morgan joined Acme Inc. in Lyon .", "In Paris , Bob met May"]
    out = tf.saved_model.load(str(tmp_path / "tagger" / "1")).signatures["serving_default"](
        text=tf.constant(texts)
    )
    expected = [
        {"tokens": [t.decode() for t in tokens], "tags": [t.decode() for t in tags], "length": int(n)}
        for tokens, tags, n in zip(out["tokens"].numpy(), out["tags"].numpy(), out["length"].numpy())
    ]
    with running_server(tmp_path / "tagger", "tagger") as running:
        assert running["rest"].predict(texts) == expected
        assert running["rest"].predict(texts, columnar=True) == expected
        assert running["grpc"].predict(texts) == expected
    assert expected[1]["tokens"][:6] == ["In", "Paris", ",", "Bob", "met", "May"]
    assert expected[1]["length"] == 6 and expected[1]["tags"][6:] == ["", ""]


@pytest.fixture(scope="module")
def direct(exported_run):
    serve = tf.saved_model.load(exported_run["version"]).signatures["serving_default"]

    def translate(texts):
        out = serve(text=tf.constant(texts))
        return [t.decode("utf-8") for t in out["translation"].numpy()], out["score"].numpy().tolist()

    return translate


def test_rest_predict_row_and_columnar(server, direct):
    expected, scores = direct(TEXTS)
    rows = server["rest"].predict(TEXTS)
    columns = server["rest"].predict(TEXTS, columnar=True)
    assert [r["translation"] for r in rows] == expected
    assert [r["translation"] for r in columns] == expected
    assert [r["score"] for r in rows] == pytest.approx(scores, abs=1e-5)
    named = server["rest"].predict_raw({"instances": [{"text": "one"}], "signature_name": "serving_default"})
    assert named["predictions"][0]["translation"] == direct(["one"])[0][0]


def test_rest_metadata_and_status(server):
    metadata = server["rest"].metadata()
    assert metadata["model_spec"] == {"name": "translator", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"
    assert set(signature["outputs"]) == {"translation", "score"}
    assert signature["method_name"] == "tensorflow/serving/predict"
    status = server["rest"].status()["model_version_status"]
    assert status[0]["version"] == "1" and status[0]["state"] == "AVAILABLE"
    assert status[0]["status"]["error_code"] == "OK"


def test_grpc_predict_metadata_and_status(server, direct):
    expected, scores = direct(TEXTS)
    results = server["grpc"].predict(TEXTS)
    assert [r["translation"] for r in results] == expected
    assert [r["score"] for r in results] == pytest.approx(scores, abs=1e-5)
    metadata = server["grpc"].metadata()
    assert "serving_default" in metadata["metadata"]["signature_def"]["signature_def"]
    assert server["grpc"].status()["model_version_status"][0]["state"] == "AVAILABLE"
    with pytest.raises(ServingClientError) as error:
        GrpcClient(server["grpc"].channel._channel.target().decode(), "nope").predict(["one"])
    assert error.value.status == "NOT_FOUND"


def test_client_command_line(server):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "serve" / "client.py"), "--rest", server["rest_url"],
         "--model", "translator", "predict", "seventy-one", "one"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["seventy-one", "one"]
    missing = subprocess.run(
        [sys.executable, str(ROOT / "serve" / "client.py"), "--rest", server["rest_url"],
         "--model", "nope", "status"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert missing.returncode == 1 and "404" in missing.stderr


def test_eight_concurrent_clients_get_the_direct_answers(server, direct):
    inputs = [TEXTS[i % len(TEXTS)] for i in range(50)]
    expected = dict(zip(TEXTS, direct(TEXTS)[0]))
    errors = []

    def client_loop(index):
        client = RestClient(server["rest"].url, "translator", timeout=60)
        answers = []
        for n, text in enumerate(inputs):
            try:
                batch = [text] if n % 2 else [text, TEXTS[(n + index) % len(TEXTS)]]
                answers.extend(zip(batch, [r["translation"] for r in client.predict(batch)]))
            except Exception as error:  # counted, not raised, so every client finishes
                errors.append(repr(error))
        return answers

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client_loop, range(8)))
    assert errors == []
    assert sum(len(r) for r in results) == 8 * 75
    for answers in results:
        for text, translation in answers:
            assert translation == expected[text]


def post(server, body, path="/v1/models/translator:predict", content_type="application/json"):
    request = urllib.request.Request(
        server["rest_url"] + path, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_odd_but_valid_inputs_are_answered(server, direct):
    code, reply = post(server, json.dumps({"instances": ["", "seventy " * 12500]}).encode())
    assert code == 200
    assert reply["predictions"][0] == {"translation": "", "score": 0.0}
    assert reply["predictions"][1]["translation"] == direct(["seventy " * 12500])[0][0]
    invalid = base64.b64encode(b"caf\xc3\x28 \xff one").decode()
    code, reply = post(server, json.dumps({"instances": [{"b64": invalid}]}).encode())
    assert code == 200 and isinstance(reply["predictions"][0]["translation"], str)
    code, reply = post(server, b'{"instances": ["\\ud800 lone surrogate"]}')
    assert code == 200


def test_warm_up_requests_are_written_with_the_export_and_replayed(exported_run, server):
    from serve.stand_in.warmup import read_warmup_requests

    requests = read_warmup_requests(exported_run["version"])
    assert [name for name, _ in requests] == ["serving_default"] * 2 + ["nbest"] * 2 + ["score"] * 2
    loaded = tf.saved_model.load(exported_run["version"])
    for name, inputs in requests:
        loaded.signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
    status = server["rest"].status()["model_version_status"][0]
    assert status["state"] == "AVAILABLE"


def test_prometheus_metrics_count_requests_by_signature_front_end_and_status(server):
    def count(text, **labels):
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        for line in text.splitlines():
            if line.startswith(":tensorflow:serving:request_count{") and all(w in line for w in wanted):
                return int(line.rsplit(" ", 1)[1])
        return 0

    def metrics():
        with urllib.request.urlopen(server["rest_url"] + "/monitoring/prometheus/metrics", timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            return r.read().decode()

    before = metrics()
    for _ in range(3):
        server["rest"].predict(["one"])
    server["grpc"].predict(["one"])
    post(server, b'{"instances": "one"}')
    after = metrics()
    ok_rest = dict(model_name="translator", signature_name="serving_default", entrypoint="REST", status="OK")
    assert count(after, **ok_rest) - count(before, **ok_rest) == 3
    ok_grpc = dict(ok_rest, entrypoint="gRPC")
    assert count(after, **ok_grpc) - count(before, **ok_grpc) == 1
    bad = dict(ok_rest, status="INVALID_ARGUMENT")
    assert count(after, **bad) - count(before, **bad) == 1
    assert ':tensorflow:serving:request_latency_bucket{model_name="translator"' in after


def test_nbest_and_score_signatures_over_rest(server, direct):
    code, reply = post(server, json.dumps({"signature_name": "nbest", "instances": TEXTS[:2]}).encode())
    assert code == 200 and len(reply["predictions"]) == 2
    assert reply["predictions"][0]["translations"][0] == direct(TEXTS[:1])[0][0]
    body = {"signature_name": "score", "instances": [{"text": "one", "translation": "un"}]}
    code, reply = post(server, json.dumps(body).encode())
    assert code == 200 and set(reply["predictions"][0]) == {"score", "token_scores", "length"}
    assert reply["predictions"][0]["score"] < 0


@pytest.mark.parametrize(
    "body, path, code, message",
    [
        (b"{not json", None, 400, "JSON Parse error"),
        (b"\xff\xfe{}", None, 400, "not valid UTF-8"),
        (b'{"instances": [5]}', None, 400, "expected a string"),
        (b'{"instances": [null, "one"]}', None, 400, "expected a string"),
        (b'{"instances": "one"}', None, 400, "must be a list"),
        (b'{"instances": []}', None, 400, "no instances"),
        (b'{"instances": ["one"], "inputs": ["one"]}', None, 400, "Exactly one"),
        (b'{"instances": ["one"], "signature_name": "nope"}', None, 400, "nope"),
        (b'{"instances": [{"b64": "***"}]}', None, 400, "base64"),
        (b'{"instances": ["one"]}', "/v1/models/unknown:predict", 404, "unknown"),
        (b'{"instances": ["one"]}', "/v1/models/translator/versions/9:predict", 404, "9"),
        (b'{"instances": ["one"]}', "/v2/whatever", 404, "Malformed"),
        (json.dumps({"instances": ["x"] * 300}).encode(), None, 413, "limit"),
        (json.dumps({"instances": ["x" * 2_000_000]}).encode(), None, 413, "limit"),
        (b'{"instances": ["one"], "signature_name": ["serving_default"]}', None, 400, "must be a string"),
        (b"[" * 5_000 + b"]" * 5_000, None, 400, "nested too deeply"),
        (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, 400, "nested too deeply"),
        (b'{"instances": ["one"]}', "/v1/models/translator/versions/" + "9" * 5_000 + ":predict", 404,
         "not found"),
    ],
)
def test_bad_requests_get_a_4xx_error_body_and_the_server_stays_up(server, body, path, code, message):
    status, reply = post(server, body, path or "/v1/models/translator:predict")
    assert status == code
    assert set(reply) == {"error"} and message in reply["error"]
    assert server["rest"].predict(["one"])[0]["translation"] is not None


def raw_request(server, head, body=b""):
    """One HTTP request written by hand; (status, headers, JSON body) of the answer."""
    port = int(server["rest_url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        reader = connection.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        for line in iter(reader.readline, b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, json.loads(reader.read(int(headers["content-length"])))


@pytest.mark.parametrize("length", ["abc", "\u00b2", "-5", "1" * 40])
def test_a_content_length_that_is_not_a_byte_count_gets_411(server, length):
    head = f"POST /v1/models/translator:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}"
    status, _, reply = raw_request(server, head.encode("utf-8").decode("latin-1"), b"{}")
    assert status == 411 and "Content-Length" in reply["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_get_405_with_allow_as_json(server, method):
    status, headers, reply = raw_request(
        server, f"{method} /v1/models/translator HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
    )
    assert status == 405 and headers["allow"] == "GET, POST" and method in reply["error"]
    status, _, reply = raw_request(server, "BREW /v1/models/translator HTTP/1.1\r\nHost: x")
    assert status == 501 and set(reply) == {"error"}
    assert server["rest"].predict(["one"])[0]["translation"] is not None


@pytest.mark.slow
def test_64_concurrent_clients_lose_no_request(server, direct):
    expected = dict(zip(TEXTS, direct(TEXTS)[0]))
    errors, answers = [], []
    started = time.time()

    def client(index):
        rest = RestClient(server["rest"].url, "translator", timeout=120)
        for n in range(5):
            text = TEXTS[(index + n) % len(TEXTS)]
            try:
                answers.append((text, rest.predict([text])[0]["translation"]))
            except Exception as error:  # counted, so that every client finishes
                errors.append(repr(error))

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(client, range(64)))
    assert errors == [] and len(answers) == 64 * 5
    assert all(translation == expected[text] for text, translation in answers)
    assert time.time() - started < 180


def test_oversized_body_is_refused_before_it_is_read(server):
    status, reply = post(server, b"x" * 5_000_000)
    assert status == 413 and "exceeds" in reply["error"]


def test_a_new_version_is_picked_up_and_served(server, exported_run):
    base = server["base"]
    staging = base / ".incoming"
    shutil.copytree(exported_run["version"], staging)
    staging.rename(base / "2")  # as the export does: complete, then renamed into place
    deadline = time.time() + 60
    states = set()
    while time.time() < deadline:
        statuses = server["rest"].status()["model_version_status"]
        states |= {(s["version"], s["state"]) for s in statuses}
        versions = [s["version"] for s in statuses]
        if ("2", "AVAILABLE") in states and versions == ["2"]:
            break
        time.sleep(0.1)
    # LOADING while it loads and replays its warm-up requests (if the poll saw it), then AVAILABLE;
    # the default policy serves the latest version only.
    assert versions == ["2"] and states <= {("1", "AVAILABLE"), ("2", "LOADING"), ("2", "AVAILABLE")}
    assert server["rest"].metadata()["model_spec"]["version"] == "2"
    assert server["grpc"].predict(["one"])[0]["translation"] == server["rest"].predict(["one"])[0]["translation"]


def test_compose_health_check_waits_for_available_and_monitoring_config_parses(server):
    compose = (ROOT / "serve" / "docker-compose.yml").read_text()
    assert "--monitoring_config_file=/config/monitoring.config" in compose
    command = json.loads(compose.split("test: ", 1)[1].splitlines()[0])
    assert command[:3] == ["CMD", "bash", "-c"]
    port = server["rest_url"].rsplit(":", 1)[1]
    # The same command, against the stand-in server on its port: healthy once AVAILABLE.
    check = subprocess.run(["bash", "-c", command[3].replace("8501", port)], timeout=30)
    assert check.returncode == 0
    unknown = command[3].replace("8501", port).replace("/v1/models/translator", "/v1/models/nothing")
    assert subprocess.run(["bash", "-c", unknown], timeout=30).returncode != 0
    # (tensorflow-serving-api ships no monitoring_config proto to parse it with.)
    lines = [line.split("#")[0] for line in (ROOT / "serve" / "monitoring.config").read_text().splitlines()]
    config = " ".join(" ".join(lines).split())
    assert config == 'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }'


def test_repository_models_config_parses_as_a_tf_serving_proto():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    models = text_format.Parse(
        (ROOT / "serve" / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    entry = models.model_config_list.config[0]
    assert entry.name == "translator" and entry.model_version_policy.latest.num_versions == 2


def test_model_config_file_and_version_policy(exported_run, tmp_path):
    base = tmp_path / "models" / "translator"
    for version in ("1", "2", "3"):
        shutil.copytree(exported_run["version"], base / version)
    config = tmp_path / "models.config"
    config.write_text(
        (ROOT / "serve" / "models.config").read_text().replace("/models/translator", str(base))
    )
    rest_port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve" / "local_server.py"), "--port=0",
         f"--rest_api_port={rest_port}", f"--model_config_file={config}", "--enable_batching",
         f"--batching_parameters_file={ROOT / 'serve' / 'batching.config'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        client = RestClient(f"http://127.0.0.1:{rest_port}", "translator", timeout=30)
        deadline = time.time() + 120
        while True:
            try:
                status = client.status()["model_version_status"]
                break
            except (OSError, ServingClientError):
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail("server did not start: " + process.stdout.read()[-3000:])
                time.sleep(0.3)
        assert [s["version"] for s in status] == ["3", "2"]  # latest { num_versions: 2 }
        pinned = RestClient(client.url, "translator", version=2).predict(TEXTS)
        assert pinned == client.predict(TEXTS)  # versions 2 and 3 hold the same model
        with pytest.raises(ServingClientError) as error:
            RestClient(client.url, "translator", version=1).predict(["one"])
        assert error.value.status == 404
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_load_benchmark_runs_bounded_and_loses_nothing(exported_run):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serving_load.py"), "--export",
         exported_run["version"], "--clients", "4", "--requests", "3", "--seconds", "60"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("rest ", "grpc "))]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [("rest", "4", "12", "0"), ("grpc", "4", "12", "0")]
    assert "with warm-up records" in result.stdout and "without warm-up records" in result.stdout


def test_a_rest_request_is_counted_before_it_is_answered(monkeypatch):
    """A client that reads the metrics once answered finds its request counted, however late
    the server's thread gets to counting it (a slow count makes the order show)."""
    monkeypatch.syspath_prepend(str(ROOT / "serve"))
    from stand_in.metrics import Metrics
    from stand_in.models import ModelServer
    from stand_in.rest import RestServer

    class SlowMetrics(Metrics):
        def record(self, *args):
            time.sleep(0.5)
            super().record(*args)

    model_server = ModelServer([], limits=None, poll_seconds=0)
    model_server.metrics = SlowMetrics()
    rest = RestServer(("127.0.0.1", 0), model_server)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(rest.serve_forever)
        try:
            url = f"http://127.0.0.1:{rest.server_address[1]}"
            code, _ = post({"rest_url": url}, b'{"instances": ["one"]}', "/v1/models/nope:predict")
            with urllib.request.urlopen(url + "/monitoring/prometheus/metrics", timeout=30) as r:
                text = r.read().decode()
        finally:
            rest.shutdown()
            rest.server_close()
    assert code == 404
    assert 'model_name="nope"' in text and 'status="NOT_FOUND"} 1' in text, text
