"""The TensorFlow training engine: `setup` (the tf.distribute strategy) and `Trainer` (the model,
optimizer, checkpoints and compiled steps of one run). `jax_trainer` is its JAX twin."""

import functools

import keras
import tensorflow as tf

from tfx_transformer.compiling import tf_function
from tfx_transformer.data import BatchShapes
from tfx_transformer.tasks import task_class
from tfx_transformer.training import distribute
from tfx_transformer.training.backends import Placement
from tfx_transformer.training.losses import smoothed_token_losses, token_accuracy_counts
from tfx_transformer.training.optimization import make_optimizer
from tfx_transformer.training.selection import set_trainable


def setup(options, strategy=None):
    """The run's Placement: `strategy`, or the one --strategy names (--cpu-devices split first)."""
    if strategy is None:
        distribute.split_cpu(options.cpu_devices)
        strategy = distribute.make_strategy(options.strategy)
    replicas = strategy.num_replicas_in_sync
    return Placement(
        name=f"strategy {distribute.strategy_name(strategy)}",
        replicas=replicas,
        batches_per_step=replicas,
        chief=distribute.is_chief(strategy),
        shapes=BatchShapes(multiple=8 if options.jit_compile else 1, packed=bool(options.packing)),
        strategy=strategy,
        processes=distribute.worker_count(strategy),
        process_index=distribute.worker_index(strategy),
    )


class Trainer:
    """Owns the model, optimizer, checkpoint and the compiled steps of one run.

    Batches are tuples of int32 arrays, labels last; `task.model_inputs` maps the others to the
    model's inputs (the task of `options.task` when none is given).
    """

    def __init__(self, options, model_config, strategy, paths, task=None):
        if isinstance(strategy, Placement):  # what `setup` gives; a bare strategy works too
            strategy = strategy.strategy
        self.options = options
        self.strategy = strategy
        self.paths = paths
        self.task = task or task_class(options.task)(options, paths)
        with strategy.scope():
            self.model = self.task.build_model(model_config)
            self.optimizer = make_optimizer(
                model_config.d_model, options.warmup_steps, options.learning_rate_scale, options.clipnorm
            )
            if options.mixed_precision == "fp16":
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            distribute.writable_folder(strategy, paths.checkpoints),
            max_to_keep=max(2, options.average_last),
        )
        self._compute = tf_function(self._compute_gradients, jit_compile=options.jit_compile)
        self._train_step = None

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    @property
    def latest_checkpoint(self):
        return self.manager.latest_checkpoint

    def learning_rate(self):
        return float(self.optimizer.learning_rate)

    def sync(self):
        """The model's variables are the trained ones already (the loop's JAX twin copies)."""

    def steps(self, batches, steps_per_epoch, offset):
        """Trains on the epoch's `batches` from step `offset`; yields (loss sum, correct
        predictions, target tokens) after each step, lazily: stop iterating to stop training."""
        if self._train_step is None:
            self._train_step = self.make_train_step()
        # Packed rows carry their segment ids too: more arrays than the task's evaluation batches.
        arity = len(batches[0]) if isinstance(batches, list) else self.task.batch_arity
        iterator = iter(
            distribute.distributed_batches(self.strategy, batches, steps_per_epoch, offset, arity)
        )
        for _ in range(offset, steps_per_epoch):
            yield self._train_step(iterator)

    def compile_ahead(self, batches, start, end, evaluation_batches=()):
        """Nothing to start ahead: tf.function traces its steps (Python, under Python's lock) as
        they meet each shape."""

    def wait_for_task_compilations(self, final):
        """Nothing started ahead (see `compile_ahead`)."""

    def restore(self):
        # Every worker restores the chief's checkpoint: a cluster's workers share the run folder
        # (the other workers save only to scratch folders, see `distribute.writable_folder`).
        latest = tf.train.latest_checkpoint(self.paths.checkpoints)
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return self.step

    def save_checkpoint(self):
        self.manager.save(checkpoint_number=self.step)

    def flush_checkpoints(self):
        """Nothing to wait for: the checkpoint manager writes as it saves."""

    def checkpoint_paths(self):
        """The kept checkpoints, oldest first."""
        return list(self.manager.checkpoints)

    def trainable_at(self, path):
        """The model's trainable weights in the checkpoint at `path` (numpy arrays, in
        model.trainable_variables order). Reads the whole training state into the model and
        optimizer (some of the model's variables are reachable only through the optimizer's
        tracking), which then hold it: call it at the end of a run, not between steps."""
        self.checkpoint.read(path).assert_existing_objects_matched()
        return [variable.numpy() for variable in self.model.trainable_variables]

    def assign_trainable(self, arrays):
        """Gives the model these trainable weights (the end of a run's choice of weights)."""
        set_trainable(self.model, arrays)

    def _compute_gradients(self, *batch):
        features, labels = batch[:-1], batch[-1]
        with tf.GradientTape() as tape:
            logits = self.model(self.task.model_inputs(features), training=True)
            losses, tokens = smoothed_token_losses(labels, logits, self.options.label_smoothing)
            loss_sum = tf.reduce_sum(losses)
            # Losses the model adds (ACT's ponder cost) are means per batch: weighted by this
            # replica's tokens, so that dividing by the global count below averages them.
            scaled = loss_sum
            for added in self.model.losses:
                scaled += tf.cast(added, tf.float32) * tokens
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        correct, _ = token_accuracy_counts(labels, logits)
        return loss_sum, correct, gradients

    def _replica_step(self, *batch):
        tokens = tf.reduce_sum(tf.cast(batch[-1] != 0, tf.float32))
        context = tf.distribute.get_replica_context()
        global_tokens = context.all_reduce(tf.distribute.ReduceOp.SUM, tokens)
        loss_sum, correct, gradients = self._compute(*batch)
        # Every replica divides by the tokens of the whole global batch, so the summed gradients
        # are those of the mean over all real tokens, however the batch was split.
        gradients = [g / tf.maximum(global_tokens, 1.0) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return loss_sum, correct, tokens

    def make_train_step(self):
        strategy = self.strategy

        @tf_function
        def train_step(iterator):
            per_replica = strategy.run(self._replica_step, args=tuple(next(iterator)))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

        return train_step

    def make_eval_step(self):
        @functools.partial(
            tf_function, input_signature=[tf.TensorSpec([None, None], tf.int32)] * self.task.batch_arity
        )
        def eval_step(*batch):
            features, labels = batch[:-1], batch[-1]
            logits = self.model(self.task.model_inputs(features), training=False)
            losses, tokens = smoothed_token_losses(labels, logits, self.options.label_smoothing)
            correct, _ = token_accuracy_counts(labels, logits)
            return tf.reduce_sum(losses), correct, tokens

        return eval_step
