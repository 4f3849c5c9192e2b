"""The JAX training engine: `setup` (the devices, keras.distribution) and `Trainer` (a jitted
step over the weights and optimizer state as arguments, donated; checkpoints as .npz files).
Needs JAX and Keras only: no TensorFlow.

Data parallelism: with several devices the model's variables are replicated
(`keras.distribution.DataParallel`) and each global batch is split along its rows, one slice
per device; with several processes (`keras.distribution.initialize`) each process feeds the
rows of its own devices: its slice of the batch list every process holds, or, from a prepared
corpus, a batch of its own stream (the streams agree on each step's shape). Batches have one
shape per length bucket (`BatchShapes(fixed=True)`), so the step compiles once per bucket width
(`BatchShapes.widths`; the run's log says how many).

Several processes: every computation on the shared weights needs every process, so process 0
evaluates, chooses, saves and exports on a copy of the weights in a model of its own (one
device, built without the distribution) while the others wait at the next step.
"""

import concurrent.futures
import dataclasses
import functools
import os

import jax
import keras
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding
from keras import ops

from tfx_transformer.data import BatchShapes
from tfx_transformer.tasks import task_class
from tfx_transformer.training.backends import Placement
from tfx_transformer.training.checkpoints import ArrayCheckpoints
from tfx_transformer.training.selection import set_trainable
from tfx_transformer.training.losses import smoothed_token_losses, token_accuracy_counts
from tfx_transformer.training.optimization import make_optimizer

BATCH_AXIS = "batch"  # keras.distribution.DataParallel's name for the data axis


def setup(options, strategy=None):
    """The run's Placement: one device, or every device of every joined process."""
    if strategy is not None:
        raise ValueError("A tf.distribute strategy needs the TensorFlow backend; on JAX, use "
                         "--strategy (keras.distribution).")
    if options.cpu_devices and options.cpu_devices > 1:
        split_cpu(options.cpu_devices)
    if options.strategy == "multiworker" and not jax.distributed.is_initialized():
        # Before anything asks JAX for its devices: that would start the backend, after which
        # processes can no longer join. CPUs reduce across processes with gloo (JAX's default
        # for them is none); accelerators are not affected.
        if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            keras.distribution.initialize()  # reads KERAS_DISTRIBUTION_* (see README)
        except ValueError as error:
            raise ValueError(
                f"--strategy multiworker on JAX could not join the processes ({error}): set "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and "
                "KERAS_DISTRIBUTION_PROCESS_ID (README, 'On JAX')."
            ) from None
    several = options.strategy in ("mirrored", "multiworker") or (
        options.strategy == "auto" and (jax.device_count() > 1)
    )
    devices = tuple(jax.devices()) if several else (jax.local_devices()[0],)
    if len(devices) > 1:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=list(devices))
        )
    else:
        keras.distribution.set_distribution(None)
    processes = jax.process_count() if several else 1
    kind = devices[0].platform.upper()
    name = f"{len(devices)} {kind} device(s)"
    if len(devices) > 1:
        name += f" (keras.distribution.DataParallel over {processes} process(es))"
    shapes = BatchShapes(multiple=8, fixed=True, replicas=len(devices),
                         packed=options.packing is not False)
    return Placement(
        name=name,
        replicas=len(devices),
        batches_per_step=1,
        chief=jax.process_index() == 0,
        shapes=shapes,
        devices=devices,
        processes=processes,
        process_index=jax.process_index() if processes > 1 else 0,
        # A process streaming its own shards fills the rows of its own devices only.
        stream_shapes=dataclasses.replace(shapes, replicas=jax.local_device_count())
        if processes > 1 else None,
        gather=gather_from_processes if processes > 1 else None,
    )


def gather_from_processes(vector):
    """Every process's `vector` ([processes, len]); all processes call it together."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(vector)))


def split_cpu(count):
    """`count` CPU devices, to try data parallelism without accelerators; JAX must not have
    started its CPU backend yet."""
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except Exception:  # JAX started already, or too old for the option: XLA's flag
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
        )
    if jax.default_backend() == "cpu" and jax.local_device_count() != count:
        raise ValueError(
            f"--cpu-devices {count}: JAX started with {jax.local_device_count()} CPU device(s) "
            f"already; set XLA_FLAGS=--xla_force_host_platform_device_count={count} instead."
        )


class Trainer:
    """The model, optimizer and checkpoints of one run, and its jitted steps.

    The weights and optimizer state live in `self.state` (trainable, non-trainable, optimizer
    variables), which each step takes and returns; `sync` copies it into the model's variables
    when the model itself is used (evaluation, model.keras).
    """

    def __init__(self, options, model_config, placement, paths, task=None, optimizer=None):
        """`optimizer`: instead of the paper's Adam and schedule (a loop of one's own, a test)."""
        if options.mixed_precision == "fp16":
            raise ValueError(
                "--mixed-precision fp16 needs loss scaling, which the JAX engine does not do; use "
                "bf16 (the default on accelerators)."
            )
        self.options = options
        self.placement = placement
        self.paths = paths
        self.task = task or task_class(options.task)(options, paths)
        self.model_config = model_config
        self._training_model = self.task.build_model(model_config)
        # Several processes: `model` is process 0's own copy, built on first use (`sync`).
        self._spans_processes = placement.processes > 1
        self._local_model = None
        self.optimizer = optimizer or make_optimizer(
            model_config.d_model, options.warmup_steps, options.learning_rate_scale, options.clipnorm
        )
        self.optimizer.build(self._training_model.trainable_variables)
        self.schedule = self.optimizer._learning_rate  # a schedule, or a constant rate
        self.checkpoints = ArrayCheckpoints(
            paths.checkpoints, keep=max(2, options.average_last), background=True
        )
        self._variables = (
            self._training_model.trainable_variables,
            self._training_model.non_trainable_variables,
            self.optimizer.variables,
        )
        self.state = self._read_variables()
        self._shared_with_variables = True
        self._step = 0
        devices = placement.devices or (jax.local_devices()[0],)
        self._data_sharding = NamedSharding(Mesh(np.array(devices), (BATCH_AXIS,)), PartitionSpec(BATCH_AXIS))
        self._replicated = NamedSharding(self._data_sharding.mesh, PartitionSpec())  # the weights'
        self._train_step = jax.jit(self._train, donate_argnums=0)
        # batch shape -> the Future of the step's (the evaluation's) compilation for it
        self._compilations, self._evaluation_compilations = {}, {}
        self._eval_step = jax.jit(self._evaluate)
        self._task_compilations = {}  # final -> those of the task's evaluation, once started ahead
        self._local_eval_step = None

    # State ------------------------------------------------------------------------------------

    def _read_variables(self):
        return tuple([v.value for v in group] for group in self._variables)

    @property
    def model(self):
        """The model that evaluation, the choice of weights, model.keras and the export use: the
        trained one, or with several processes, process 0's copy (see the module)."""
        if not self._spans_processes:
            return self._training_model
        if self._local_model is None:
            self._local_model = self._build_local_model()
        return self._local_model

    def _build_local_model(self):
        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            model = self.task.build_model(self.model_config)
        finally:
            keras.distribution.set_distribution(distribution)
        self._local_eval_step = jax.jit(functools.partial(self._evaluate, model=model))
        return model

    def sync(self):
        """Writes the trained state into the model's (and optimizer's) variables; with several
        processes, the weights into process 0's own model."""
        if self._spans_processes:
            model = self.model
            for variables, values in zip(
                (model.trainable_variables, model.non_trainable_variables), self.state[:2]
            ):
                for variable, value in zip(variables, values):
                    variable.assign(local_copy(value))
            return
        for group, values in zip(self._variables, self.state):
            for variable, value in zip(group, values):
                variable.assign(value)
        # The next step donates its state: it must not take the arrays the variables now hold.
        self._shared_with_variables = True

    @property
    def step(self):
        return self._step

    def learning_rate(self):
        return float(self.schedule(self._step) if callable(self.schedule) else self.schedule)

    # Checkpoints ------------------------------------------------------------------------------

    @property
    def latest_checkpoint(self):
        return self.checkpoints.latest()

    def _checkpoint_names(self):
        """(name in a checkpoint, group, index in the group) of every variable of the state."""
        return [
            (f"{name}/{index:04d}/{variable.path}", group, index)
            for group, name in enumerate(("model", "model_state", "optimizer"))
            for index, variable in enumerate(self._variables[group])
        ]

    def save_checkpoint(self):
        if not self.placement.chief:
            return
        # Written in the background while the next steps run, so copies: on a CPU a host view
        # shares the device buffer, and while one lives JAX cannot donate it to the next step.
        arrays = {
            name: np.array(local_copy(self.state[group][index]), copy=True)
            for name, group, index in self._checkpoint_names()
        }
        self.checkpoints.save(self._step, arrays)

    def flush_checkpoints(self):
        """Waits for the checkpoint being written in the background (raising its error)."""
        self.checkpoints.wait()

    def checkpoint_paths(self):
        """The kept checkpoints, oldest first."""
        return [self.checkpoints.path(step) for step in self.checkpoints.steps()]

    def trainable_at(self, path):
        """The model's trainable weights in the checkpoint at `path` (numpy arrays, in
        model.trainable_variables order)."""
        arrays = self.checkpoints.load(path)
        return [arrays[name] for name, group, _ in self._checkpoint_names() if group == 0]

    def assign_trainable(self, arrays):
        """Gives the model, and the state the steps use, these trainable weights (the end of a
        run's choice of weights)."""
        if self._spans_processes:  # process 0's copy alone: the others train no more
            set_trainable(self.model, arrays)
            return
        # Placed as the trained state is, so that the evaluation's compiled steps serve them.
        set_trainable(self.model, [jax.device_put(array, self._replicated) for array in arrays])
        self.state = self._read_variables()
        self._shared_with_variables = True

    def restore(self):
        latest = self.checkpoints.latest()
        if latest is None:
            return 0
        arrays = self.checkpoints.load(latest)
        expected = self._checkpoint_names()
        missing = [name for name, _, _ in expected if name not in arrays]
        if missing or len(arrays) != len(expected):
            raise ValueError(
                f"{latest} does not hold this run's variables (missing {missing[:3]}...); was the "
                "model changed since it was written?"
            )
        for key, group, index in expected:
            variable, value = self._variables[group][index], arrays[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{latest}: {key} has shape {value.shape}, the model {variable.shape}.")
            variable.assign(value.astype(variable.dtype))
        self.state = self._read_variables()
        self._shared_with_variables = True
        self._step = int(np.asarray(local_copy(self.optimizer.iterations.value)))
        return self._step

    # Steps ------------------------------------------------------------------------------------

    def _forward(self, trainable, non_trainable, batch, training, model=None):
        """(summed loss, correct predictions, real target tokens, new non-trainable state, the
        losses the model adds itself) of `model` (default: the trained one)."""
        features, labels = batch[:-1], batch[-1]
        logits, non_trainable, model_losses = (model or self._training_model).stateless_call(
            trainable,
            non_trainable,
            self.task.model_inputs(features),
            training=training,
            return_losses=True,
        )
        losses, tokens = smoothed_token_losses(labels, logits, self.options.label_smoothing)
        correct, _ = token_accuracy_counts(labels, logits)
        added = sum((ops.cast(loss, "float32") for loss in model_losses), ops.zeros((), "float32"))
        return ops.sum(losses), correct, tokens, non_trainable, added

    def _loss(self, trainable, non_trainable, batch):
        loss_sum, correct, tokens, non_trainable, added = self._forward(
            trainable, non_trainable, batch, True
        )
        # The mean over the global batch's real tokens: its gradient is the one the TensorFlow
        # engine gets by dividing each replica's summed gradients by the global token count.
        # `added`: what the model adds to the loss itself (ACT's ponder cost), a batch mean.
        loss = loss_sum / ops.maximum(tokens, 1.0) + added
        return loss, (non_trainable, loss_sum, correct, tokens)

    def _train(self, state, batch):
        trainable, non_trainable, optimizer_variables = state
        (_, (non_trainable, loss_sum, correct, tokens)), gradients = jax.value_and_grad(
            self._loss, has_aux=True
        )(trainable, non_trainable, batch)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        return (trainable, non_trainable, optimizer_variables), (loss_sum, correct, tokens)

    def _evaluate(self, trainable, non_trainable, batch, model=None):
        return self._forward(trainable, non_trainable, batch, False, model)[:3]

    def _place(self, batch, own=False):
        """A global batch as arrays split by rows over the devices; with several processes each
        contributes the rows of its own devices: its slice of the batch (every process holds the
        same batch list), or the whole of an `own` batch (from its own stream)."""
        processes = self.placement.processes
        arrays = []
        for array in batch:
            if processes > 1 and not own:
                rows = len(array) // processes
                array = array[jax.process_index() * rows : (jax.process_index() + 1) * rows]
            arrays.append(
                jax.make_array_from_process_local_data(self._data_sharding, np.asarray(array, "int32"))
            )
        return tuple(arrays)

    def steps(self, batches, steps_per_epoch, offset):
        """Trains on the epoch's `batches` from step `offset`; yields (loss sum, correct
        predictions, target tokens) after each step, lazily: stop iterating to stop training."""
        own = not isinstance(batches, list)  # a StreamEpoch: this process's own batches
        if own:
            epoch = batches.local_batches(steps_per_epoch, offset, 1)
        else:
            epoch = (batches[index] for index in range(offset, steps_per_epoch))
        for batch in epoch:
            self._own_state()
            wait_for_compilation(self._compilations, batch)
            self.state, results = self._train_step(self.state, self._place(batch, own))
            self._step += 1
            yield results

    def _own_state(self):
        """A copy of the state where it is the variables' arrays: the next step donates its
        state. On one device the variables' arrays are not committed to it and a step's outputs
        are (to the batch's one-device mesh): the copy is committed as they are, or the first
        step would compile for the variables' placement and the second, of the same shape, again."""
        if not self._shared_with_variables:
            return

        def own(array):
            if isinstance(array.sharding, SingleDeviceSharding):
                return jax.device_put(array, self._replicated, may_alias=False)
            return array.copy()

        self.state = jax.tree_util.tree_map(own, self.state)
        self._shared_with_variables = False

    def compile_ahead(self, batches, start, end, evaluation_batches=()):
        """Starts compiling the step for each shape among `batches[start:end]` (the steps about
        to run) not met before, the evaluation's for each shape of `evaluation_batches` (the
        validation batches) and, the first time, what the task's evaluations compile (the
        translator's decoding, the tagger's predictions, the language model's scores:
        `Task.lower_evaluation`), side by side in threads.

        Otherwise each compiles when the first batch of a shape arrives, one shape after
        another: 7 shapes for max_length 64, most of a short run's first minutes on an H100
        (README). XLA compiles outside Python's lock, so the compilations overlap one another;
        the tracing stays on this thread, in the order the steps meet the shapes, so that the
        first step waits for its own. jax.jit keeps what was compiled: the steps find it there.
        A process's own stream (a prepared corpus) is not known ahead: its shapes compile as
        they come; with several processes, process 0 evaluates on a model of its own, compiled
        when it first evaluates."""
        steps = batches[start:end] if isinstance(batches, list) else ()
        evaluations = () if self._spans_processes else evaluation_batches
        self._own_state()  # the arrays the steps will take: compiled for their placement
        work = [(self._train_step, (self.state,), self._compilations, shape)
                for shape in new_shapes(steps, self._compilations)]
        work += [(self._eval_step, tuple(self.state[:2]), self._evaluation_compilations, shape)
                 for shape in new_shapes(evaluations, self._evaluation_compilations)]
        task_evaluation = bool(evaluations) and not self._task_compilations
        if not work and not task_evaluation:
            return
        # A thread per compilation up to one per core (the pool starts them as work comes).
        pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="compile")
        for function, weights, compilations, shape in work:
            placed = self._place(tuple(np.zeros(dims, "int32") for dims in shape))
            compilations[shape] = pool.submit(function.lower(*weights, placed).compile)
        if task_evaluation:
            # Traced here while the steps compile: the task's own compilations (those of the
            # evaluations in training, then the end's), for the arrays `sync` will give the
            # model's variables (and `assign_trainable` the end's candidates).
            state = {id(variable): array for group, arrays in zip(self._variables[:2], self.state[:2])
                     for variable, array in zip(group, arrays)}
            for final in (False, True):
                lowered = self.task.lower_evaluation(
                    self.model, lambda variable: state[id(variable)], final
                )
                self._task_compilations[final] = [pool.submit(c.compile) for c in lowered]
        pool.shutdown(wait=False)

    def wait_for_task_compilations(self, final):
        """Until what `compile_ahead` started of the task's evaluation (`final`: the end's) is
        compiled: the evaluation would otherwise compile it again."""
        for compilation in self._task_compilations.get(final, ()):
            compilation.result()

    def make_eval_step(self):
        """(loss sum, correct, tokens) of a validation batch, for the weights `sync` gave the
        model."""
        def eval_step(*batch):
            if self._spans_processes:  # process 0 alone, on its own copy
                model = self.model
                return self._local_eval_step(
                    [v.value for v in model.trainable_variables],
                    [v.value for v in model.non_trainable_variables],
                    tuple(np.asarray(array, "int32") for array in batch),
                )
            trainable, non_trainable, _ = self.state
            wait_for_compilation(self._evaluation_compilations, batch)
            return self._eval_step(trainable, non_trainable, self._place(batch))

        return eval_step


def batch_shape(batch):
    return tuple(np.shape(array) for array in batch)


def wait_for_compilation(compilations, batch):
    """Until the compilation `compile_ahead` started for `batch`'s shape, if any, is done (at
    once when it is; an error in it is raised here)."""
    compilation = compilations.get(batch_shape(batch))
    if compilation is not None:
        compilation.result()


def new_shapes(batches, known):
    """The shapes of `batches` not in `known`, in the order they first appear."""
    shapes = []
    for batch in batches:
        shape = batch_shape(batch)
        if shape not in known and shape not in shapes:
            shapes.append(shape)
    return shapes


def local_copy(array):
    """This process's copy of a replicated array that may span processes (whose value cannot be
    fetched whole without the others)."""
    if getattr(array, "is_fully_addressable", True):
        return array
    return array.addressable_data(0)
