"""A request that cannot be answered, as both front ends report it."""


class ServingError(Exception):
    """A request that cannot be answered; `code` is the HTTP status, `grpc` the gRPC code name."""

    def __init__(self, message, code=400, grpc="INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code
        self.grpc = grpc


def not_found(message):
    return ServingError(message, 404, "NOT_FOUND")
