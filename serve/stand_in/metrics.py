"""Request counts and latencies per model, signature and front end, served in Prometheus's text
format at /monitoring/prometheus/metrics under TF Serving's metric names."""

import bisect
import threading

# Latency buckets in microseconds, TF Serving's unit for request_latency.
BUCKETS_US = (1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 3e7)


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}  # (model, signature, entrypoint, status) -> requests
        self.latencies = {}  # (model, signature, entrypoint) -> [bucket counts..., sum, count]

    def record(self, model, signature, entrypoint, status, seconds):
        microseconds = seconds * 1e6
        with self.lock:
            key = (model, signature, entrypoint, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            if status != "OK":
                return
            histogram = self.latencies.setdefault(
                (model, signature, entrypoint), [0] * (len(BUCKETS_US) + 2)
            )
            histogram[bisect.bisect_left(BUCKETS_US, microseconds)] += 1
            histogram[-2] += microseconds
            histogram[-1] += 1

    def prometheus_text(self):
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self.lock:
            for (model, signature, entrypoint, status), count in sorted(self.counts.items()):
                labels = _labels(model_name=model, signature_name=signature, entrypoint=entrypoint, status=status)
                lines.append(f":tensorflow:serving:request_count{{{labels}}} {count}")
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, signature, entrypoint), histogram in sorted(self.latencies.items()):
                labels = _labels(model_name=model, signature_name=signature, entrypoint=entrypoint)
                cumulative = 0
                for bound, count in zip(list(BUCKETS_US) + ["+Inf"], histogram[:-2]):
                    cumulative += count
                    le = bound if bound == "+Inf" else f"{bound:g}"
                    lines.append(f':tensorflow:serving:request_latency_bucket{{{labels},le="{le}"}} {cumulative}')
                lines.append(f":tensorflow:serving:request_latency_sum{{{labels}}} {histogram[-2]:.0f}")
                lines.append(f":tensorflow:serving:request_latency_count{{{labels}}} {histogram[-1]}")
        return "\n".join(lines) + "\n"


def _labels(**values):
    escaped = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for k, v in values.items()}
    return ",".join(f'{key}="{value}"' for key, value in escaped.items())
