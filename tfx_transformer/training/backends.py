"""Which training engine runs a job: `trainer` (TensorFlow: tf.distribute, tf.function) or
`jax_trainer` (JAX: a jitted stateless step, keras.distribution). Both give a `Placement` (where
the steps run, who writes the run folder, how batches are shaped) and a `Trainer` with the same
methods, so that `loop` reads the same on either backend and imports neither itself."""

import contextlib
import dataclasses
import importlib
import sys

import keras

from tfx_transformer.data import BatchShapes

ENGINES = {"tensorflow": "tfx_transformer.training.trainer", "jax": "tfx_transformer.training.jax_trainer"}


@dataclasses.dataclass
class Placement:
    """Where a run's steps run.

    `batches_per_step`: batches of the task's list that one step takes (TensorFlow: one per
    replica; JAX: one, split over the devices); `shapes`: how the task shapes its batches;
    `strategy`: the tf.distribute strategy (TensorFlow), `devices` the JAX devices.
    """

    name: str
    replicas: int
    batches_per_step: int
    chief: bool
    shapes: BatchShapes
    strategy: object = None
    devices: tuple = ()
    processes: int = 1  # the processes (workers) that train together
    process_index: int = 0  # this process's place among them (0: the chief)
    # How a process shapes the batches of a stream of its own (a prepared corpus), where a step
    # takes one from each process (JAX, several processes); None: as `shapes` and
    # `batches_per_step` say.
    stream_shapes: BatchShapes = None
    # With `stream_shapes`: the collective by which the processes' streams agree on each step's
    # shape (int vector in, [processes, len] out; see `data.shards.ShapeAgreement`).
    gather: object = None

    def batching(self, streamed):
        """(shapes, batches of the task's list or stream that one step takes)."""
        if streamed and self.stream_shapes is not None:
            return self.stream_shapes, self.processes
        return self.shapes, self.batches_per_step


def engine():
    """The training engine module of the running Keras backend."""
    backend = keras.backend.backend()
    if backend not in ENGINES:
        raise ValueError(
            f"train.py runs on the TensorFlow or JAX backend; KERAS_BACKEND is {backend!r}."
        )
    return importlib.import_module(ENGINES[backend])


@contextlib.contextmanager
def keras_without_tensorflow():
    """Keras looks for TensorFlow wherever it is installed, importing it, to seed it
    (`keras.utils.set_random_seed`) and to recognise its objects when saving (`model.save`):
    its import takes 5 s on the development machine, for a module a JAX run never uses. Inside the
    block, on a backend other than TensorFlow and in a process that has not imported it, Keras
    is told that TensorFlow is absent. Where Keras keeps that elsewhere than this knows, the
    block changes nothing."""
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    try:
        from keras.src.utils.module_utils import tensorflow as lazy_tensorflow

        known = lazy_tensorflow._available
    except (ImportError, AttributeError):
        yield
        return
    lazy_tensorflow._available = False
    try:
        yield
    finally:
        lazy_tensorflow._available = known


def bf16_is_fast():
    """Whether bfloat16 matrix products run natively here: on a GPU or TPU, or, on the
    TensorFlow backend, a CPU with AVX512-BF16 or AMX (oneDNN's bf16 kernels; measured 1.3x the
    float32 training speed on a 2-core EPYC, README "Real text"). Elsewhere bf16 is emulated and
    slower than float32."""
    if on_accelerator():
        return True
    if keras.backend.backend() != "tensorflow":
        return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags():
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo says none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def on_accelerator():
    """Whether the running backend sees a GPU or TPU."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
