"""Serving under load: N concurrent clients sending requests of mixed lengths to the local
server (serve/local_server.py) on 127.0.0.1, over REST and gRPC; and the first request's latency
after a load, with and without the export's warm-up records.

    python benchmarks/serving_load.py --export runs/default/export/1 [--clients 8,32]
        [--requests 20] [--seconds 120]

Prints, per protocol and client count: requests, errors (target 0), throughput (requests/s)
and latency p50 / p95 / p99 (ms). Each round stops at --seconds whatever is left, so the whole
benchmark is bounded in time. The texts are English number words of 1 to ~15 words, the built-in
task's source side; a request holds one to four of them.
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the gRPC client imports TensorFlow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from serve.client import GrpcClient, RestClient, ServingClientError  # noqa: E402

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """serve/local_server.py over one copy of an export version, until closed."""

    def __init__(self, version_dir, warm_up=True):
        self.base = tempfile.mkdtemp(prefix="serving-load-")
        shutil.copytree(version_dir, os.path.join(self.base, "1"))
        if not warm_up:
            os.remove(os.path.join(self.base, "1", WARMUP_FILE))
        self.grpc_port, self.rest_port = free_port(), free_port()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "serve", "local_server.py"),
             f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             "--model_name=translator", f"--model_base_path={self.base}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.rest = RestClient(f"http://127.0.0.1:{self.rest_port}", "translator", timeout=120)
        while True:
            try:
                if self.rest.status()["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except (OSError, ServingClientError):
                pass
            if self.process.poll() is not None or time.perf_counter() - started > 300:
                self.close()
                raise SystemExit("the local server did not start")
            time.sleep(0.1)
        self.start_seconds = time.perf_counter() - started

    def client(self, protocol):
        if protocol == "rest":
            return RestClient(f"http://127.0.0.1:{self.rest_port}", "translator", timeout=120)
        return GrpcClient(f"127.0.0.1:{self.grpc_port}", "translator", timeout=120)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def texts(count, seed=0):
    from num2words import num2words

    rng = random.Random(seed)
    return [num2words(rng.choice([rng.randrange(100), rng.randrange(10**6)])) for _ in range(count)]


def load_round(server, protocol, clients, requests, seconds):
    """Every client sends `requests` requests of 1-4 texts; (latencies in s, errors, wall s)."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def run(client, index):
        batches = [texts(random.Random(index * 1000 + n).randint(1, 4), seed=index * 1000 + n)
                   for n in range(requests)]
        for batch in batches:
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            try:
                client.predict(batch)
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as error:  # counted: the figure to keep at 0
                with lock:
                    errors.append(repr(error))

    # Clients (and, for gRPC, TensorFlow's tensor protos) are made before the clock starts.
    connected = [server.client(protocol) for _ in range(clients)]
    connected[0].predict(texts(1))  # the client side's first call (imports) is not timed
    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(client, i)) for i, client in enumerate(connected)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for client in connected:
        getattr(client, "close", lambda: None)()
    return latencies, errors, wall


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def first_request_ms(version_dir, warm_up):
    server = Server(version_dir, warm_up)
    try:
        started = time.perf_counter()
        server.rest.predict(texts(1, seed=99))
        first = time.perf_counter() - started
        started = time.perf_counter()
        server.rest.predict(texts(1, seed=98))
        second = time.perf_counter() - started
        return first * 1e3, second * 1e3, server.start_seconds
    finally:
        server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="an export's version folder")
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--requests", type=int, default=20, help="per client and round")
    parser.add_argument("--seconds", type=float, default=120, help="bound on each round")
    args = parser.parse_args()

    print("first request after the version is AVAILABLE (ms): first, second; server start (s)")
    for warm_up in (False, True):
        first, second, start = first_request_ms(args.export, warm_up)
        label = "with warm-up records" if warm_up else "without warm-up records"
        print(f"  {label:24s} {first:8.1f} {second:8.1f}   start {start:.1f}")

    server = Server(args.export)
    try:
        print("protocol clients requests errors  req/s   p50 ms   p95 ms   p99 ms")
        for protocol in ("rest", "grpc"):
            for clients in (int(c) for c in args.clients.split(",")):
                latencies, errors, wall = load_round(server, protocol, clients, args.requests, args.seconds)
                print(
                    f"{protocol:8s} {clients:7d} {len(latencies) + len(errors):8d} {len(errors):6d} "
                    f"{len(latencies) / wall:6.1f} {percentile(latencies, 0.5) * 1e3:8.1f} "
                    f"{percentile(latencies, 0.95) * 1e3:8.1f} {percentile(latencies, 0.99) * 1e3:8.1f}"
                )
                for error in sorted(set(errors))[:3]:
                    print(f"    error: {error[:200]}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
