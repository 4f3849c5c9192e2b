"""Models and versions: each named model's numbered versions under its base path, loaded as
the version policy selects them and polled for new ones (the export renames a finished version
into place, so a half-written one is never seen)."""

import logging
import os
import threading

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the export uses)
from tensorflow.core.protobuf import saved_model_pb2

from stand_in.errors import ServingError, not_found
from stand_in.metrics import Metrics
from stand_in.warmup import read_warmup_requests

log = logging.getLogger("local_server")

DEFAULT_SIGNATURE = "serving_default"


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
        self.warmed_up = self.warm_up()

    def warm_up(self):
        """Replays the export's warm-up records, as TF Serving does before a version is
        AVAILABLE; returns how many ran."""
        requests = read_warmup_requests(self.path)
        for signature, inputs in requests:
            self.run(signature, inputs)
        return len(requests)

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
        self.loading = set()
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
            with self.lock:
                self.loading.add(version)
            try:
                servable = Servable(self.name, version, path)
            except Exception as error:  # a broken version must not take the server down
                log.error("could not load %s version %s: %s", self.name, version, error)
                with self.lock:
                    self.loading.discard(version)
                    self.errors[version] = str(error)
                continue
            with self.lock:
                self.loading.discard(version)
                self.servables[version] = servable
            log.info(
                "serving %s version %s from %s (%d warm-up requests replayed)",
                self.name, version, path, servable.warmed_up,
            )
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
            versions = sorted(set(self.servables) | set(self.errors) | self.loading, reverse=True)
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {self.name}")
                versions = [version]
            statuses = []
            for v in versions:
                if v in self.servables:
                    statuses.append((v, "AVAILABLE", "OK", ""))
                elif v in self.loading:  # loading, or replaying its warm-up requests
                    statuses.append((v, "LOADING", "OK", ""))
                else:
                    statuses.append((v, "END", "UNKNOWN", self.errors[v]))
        if not statuses:
            raise not_found(f"Could not find any versions of model {self.name}")
        return statuses


class ModelServer:
    """The models, their polling thread, and the request logic both front ends share."""

    def __init__(self, models, limits, poll_seconds=1.0):
        """`limits`: a Limits, applied to every request by both front ends."""
        self.models = {model.name: model for model in models}
        self.limits = limits
        self.metrics = Metrics()
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
