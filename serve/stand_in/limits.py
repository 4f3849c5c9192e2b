"""What one request may hold; past it, a 413 (RESOURCE_EXHAUSTED), never a crash."""

import dataclasses

from stand_in.errors import ServingError


@dataclasses.dataclass
class Limits:
    max_request_bytes: int = 8 * 1024 * 1024  # a REST body, or a gRPC message
    max_instances: int = 256  # inputs per request
    max_input_bytes: int = 1024 * 1024  # one input text

    def check_texts(self, values):
        """Bounds on a batch of inputs (bytes)."""
        if len(values) == 0:
            raise ServingError("The request holds no instances.")
        if len(values) > self.max_instances:
            raise ServingError(
                f"{len(values)} instances exceed this server's limit of "
                f"{self.max_instances} per request.",
                413,
                "RESOURCE_EXHAUSTED",
            )
        longest = max(len(v) for v in values)
        if longest > self.max_input_bytes:
            raise ServingError(
                f"An input of {longest} bytes exceeds this server's limit of "
                f"{self.max_input_bytes} bytes.",
                413,
                "RESOURCE_EXHAUSTED",
            )
