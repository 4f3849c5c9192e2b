"""tf.distribute in one place: which strategy, who is the chief, where a worker may write, and
which batches each replica gets."""

import json
import os
import tempfile

import tensorflow as tf

from tfx_transformer.training.options import STRATEGIES


def split_cpu(count):
    """Splits the CPU into `count` logical devices (for trying distribution without GPUs).

    Must run before TensorFlow initializes its devices.
    """
    if count and count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )


def cluster_workers():
    """Number of workers (and chief) that TF_CONFIG names; 0 without TF_CONFIG."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name="auto"):
    """auto: MultiWorkerMirrored when TF_CONFIG names several workers, Mirrored on several
    GPUs, else the default strategy. mirrored: every local GPU, or every logical CPU."""
    if name not in STRATEGIES:
        raise ValueError(f"`--strategy` must be one of {STRATEGIES}. Received: {name!r}")
    if name == "auto":
        if cluster_workers() > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_count(strategy):
    """The processes that train together under `strategy` (1 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(name, ())) for name in ("chief", "worker"))


def worker_index(strategy):
    """This process's place among the workers (0 for the chief, then the workers in TF_CONFIG's
    order); 0 without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return resolver.task_id + (1 if has_chief else 0)


def writable_folder(strategy, folder):
    """The chief writes to `folder`; other workers to a scratch folder of their own, because
    multi-worker checkpointing needs every worker to save."""
    if is_chief(strategy):
        return folder
    return tempfile.mkdtemp(prefix="tfx-transformer-worker-")


def strategy_name(strategy):
    names = {
        tf.distribute.MultiWorkerMirroredStrategy: "MultiWorkerMirroredStrategy",
        tf.distribute.MirroredStrategy: "MirroredStrategy",
    }
    for cls, name in names.items():
        if isinstance(strategy, cls):
            return name
    return type(strategy).__name__.lstrip("_")


def distributed_batches(strategy, batches, steps_per_epoch, skip_steps, arity):
    """Each replica gets its own batches: replica r of step s takes batch s * R + r of a list;
    from a stream (`data.shards.StreamEpoch`), each worker's replicas take its own stream's
    batches in turn. `arity`: arrays per batch."""
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        per_pipeline = replicas // context.num_input_pipelines
        start = context.input_pipeline_id * per_pipeline

        def generate():
            if not isinstance(batches, list):  # a StreamEpoch: this worker's own batches
                yield from batches.local_batches(steps_per_epoch, skip_steps, per_pipeline)
                return
            for step in range(skip_steps, steps_per_epoch):
                for replica in range(start, start + per_pipeline):
                    yield batches[step * replicas + replica]

        spec = tf.TensorSpec([None, None], tf.int32)
        signature = (spec,) * arity
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(
            tf.data.AUTOTUNE
        )

    return strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=False)
    )
