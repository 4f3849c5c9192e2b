"""The parts of serve/local_server.py, the stand-in for TF Serving: errors.py (a request's fault
as an HTTP status and a gRPC code), models.py (loaded versions and their polling), limits.py
(what a request may hold), rest.py and grpc_service.py (the two front ends over one
`ModelServer`)."""
