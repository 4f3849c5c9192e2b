"""The training job behind `python train.py`: data, tokenizer, distributed steps, TensorBoard,
evaluation, checkpoints and resume, and the files of the output folder.

Output layout (under `--output DIR`): config.json, tokenizer/, logs/{train,validation}/,
checkpoints/ (for --resume), model.keras, export/<version>/, metrics.json.
"""

import dataclasses
import json
import os
import sys
import time

import keras
import tensorflow as tf

from tfx_transformer import data as data_lib
from tfx_transformer import distribute
from tfx_transformer.config import PRESETS, JsonDataclass, TransformerConfig
from tfx_transformer.files import atomic_path, write_json_atomic
from tfx_transformer.losses import smoothed_token_losses, token_accuracy_counts
from tfx_transformer.optimization import make_optimizer
from tfx_transformer.reporting import log, restart_clock
from tfx_transformer.task import (
    DEFAULT_DATA,
    DEFAULT_EPOCHS,
    DEFAULT_LABEL_SMOOTHING,
    TASKS,
    make_task,
)

MIXED_PRECISION = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# Options that may change when a run is resumed; every other one must match the saved run.
RESUMABLE_CHANGES = ("epochs", "steps", "resume", "strategy", "cpu_devices", "export")


@dataclasses.dataclass
class TrainOptions(JsonDataclass):
    """Every option of a training run; saved in DIR/config.json and accepted by --config."""

    output: str = "runs/default"
    task: str = "translation"
    preset: str = "tiny"
    data: str | None = None  # None: the task's built-in set
    valid_data: str | None = None
    test_data: str | None = None
    epochs: int | None = None  # None: the task's default (DEFAULT_EPOCHS)
    steps: int | None = None
    batch_tokens: int = 3072
    max_length: int | None = None
    long_pairs: str = "drop"
    vocab_size: int = 8000  # translation: SentencePiece bound; tagging: most frequent words kept
    model: dict = dataclasses.field(default_factory=dict)  # TransformerConfig overrides
    warmup_steps: int = 400
    learning_rate_scale: float = 1.0
    label_smoothing: float | None = None  # None: the task's default
    clipnorm: float | None = None
    strategy: str = "auto"
    cpu_devices: int = 0
    mixed_precision: str = "none"
    jit_compile: bool = False
    seed: int = 0
    eval_every: int = 0  # steps between evaluations; 0: at the end of every epoch
    eval_examples: int = 500
    beam_size: int = 4
    length_penalty: float = 0.6
    checkpoint_every: int = 200
    log_every: int = 25
    samples: int = 5
    word_dropout: float = 0.1  # tagging: share of training words replaced by <unk>
    export: bool = True
    resume: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}. Received: {self.task!r}")
        if self.data is None:
            self.data = DEFAULT_DATA[self.task]
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.task]
        if self.label_smoothing is None:
            self.label_smoothing = DEFAULT_LABEL_SMOOTHING[self.task]
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1). Received: {self.label_smoothing!r}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"--word-dropout must be in [0, 1). Received: {self.word_dropout!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}. Received: {self.preset!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"--mixed-precision must be one of {sorted(MIXED_PRECISION)}. "
                f"Received: {self.mixed_precision!r}"
            )
        for name in ("epochs", "batch_tokens", "vocab_size", "warmup_steps", "beam_size",
                     "checkpoint_every", "log_every", "eval_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer. Received: {value!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps <= 0):
            raise ValueError(f"--steps must be a positive integer. Received: {self.steps!r}")
        if self.long_pairs not in ("drop", "truncate"):
            raise ValueError(f"--long-pairs must be drop or truncate. Received: {self.long_pairs!r}")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(
                f"--strategy must be one of {distribute.STRATEGIES}. Received: {self.strategy!r}"
            )
        if "vocab_size" in self.model:
            raise ValueError(
                "The vocabulary size comes from the tokenizer trained on the data; bound it with "
                "--vocab-size instead of --set vocab_size."
            )
        TransformerConfig.preset(self.preset, **self.model_overrides())  # fails early on bad fields

    def model_overrides(self):
        overrides = dict(self.model)
        if self.max_length is not None:
            overrides["max_length"] = self.max_length
        return overrides



class RunPaths:
    def __init__(self, output):
        self.output = output
        self.config = os.path.join(output, "config.json")
        self.tokenizer = os.path.join(output, "tokenizer")
        self.logs = os.path.join(output, "logs")
        self.checkpoints = os.path.join(output, "checkpoints")
        self.model = os.path.join(output, "model.keras")
        self.metrics = os.path.join(output, "metrics.json")


# Preparing a run -------------------------------------------------------------------------------


def check_output_folder(options, paths):
    """A new run never writes over an old one; --resume needs the old one's config."""
    if options.resume:
        if not os.path.exists(paths.config):
            raise ValueError(f"--resume: {paths.config} does not exist; there is no run to resume.")
        with open(paths.config, encoding="utf-8") as f:
            saved = json.load(f)["options"]
        mismatched = {
            key: (saved.get(key), value)
            for key, value in options.to_dict().items()
            if key not in RESUMABLE_CHANGES and key != "output" and saved.get(key) != value
        }
        if mismatched:
            details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
            raise ValueError(f"--resume with options that differ from the saved run: {details}")
        return
    leftovers = [p for p in (paths.config, paths.checkpoints, paths.model) if os.path.exists(p)]
    if leftovers:
        raise ValueError(
            f"{options.output} already holds a run ({', '.join(os.path.basename(p) for p in leftovers)}). "
            "Pass --resume to continue it, or choose another --output."
        )


# The training loop -----------------------------------------------------------------------------


class Trainer:
    """Owns the model, optimizer, checkpoint and the compiled steps of one run.

    Batches are tuples of int32 arrays, labels last; `task.model_inputs` maps the others to the
    model's inputs (the translation task when none is given).
    """

    def __init__(self, options, model_config, strategy, paths, task=None):
        self.options = options
        self.strategy = strategy
        self.paths = paths
        self.task = task or make_task(options, paths)
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
            max_to_keep=2,
        )
        self._compute = tf.function(self._compute_gradients, jit_compile=options.jit_compile)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return self.step

    def save_checkpoint(self):
        self.manager.save(checkpoint_number=self.step)

    def _compute_gradients(self, *batch):
        features, labels = batch[:-1], batch[-1]
        with tf.GradientTape() as tape:
            logits = self.model(self.task.model_inputs(features), training=True)
            losses, _ = smoothed_token_losses(labels, logits, self.options.label_smoothing)
            loss_sum = tf.reduce_sum(losses)
            scaled = loss_sum
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(loss_sum)
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

        @tf.function
        def train_step(iterator):
            per_replica = strategy.run(self._replica_step, args=tuple(next(iterator)))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

        return train_step

    def make_eval_step(self):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * self.task.batch_arity)
        def eval_step(*batch):
            features, labels = batch[:-1], batch[-1]
            logits = self.model(self.task.model_inputs(features), training=False)
            losses, tokens = smoothed_token_losses(labels, logits, self.options.label_smoothing)
            correct, _ = token_accuracy_counts(labels, logits)
            return tf.reduce_sum(losses), correct, tokens

        return eval_step


def distributed_batches(strategy, batches, steps_per_epoch, skip_steps):
    """Each replica gets its own batches: replica r of step s takes batch s * R + r."""
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        per_pipeline = replicas // context.num_input_pipelines
        start = context.input_pipeline_id * per_pipeline

        def generate():
            for step in range(skip_steps, steps_per_epoch):
                for replica in range(start, start + per_pipeline):
                    yield batches[step * replicas + replica]

        spec = tf.TensorSpec([None, None], tf.int32)
        signature = (spec,) * len(batches[0])
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(
            tf.data.AUTOTUNE
        )

    return strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=False)
    )


# Logging helpers -------------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal; in a log file, a plain line every ~5% of the steps."""

    def __init__(self, total_steps, enabled):
        self.total_steps = total_steps
        self.enabled = enabled
        self.interactive = sys.stdout.isatty()
        self.every = max(1, total_steps // 20)
        if enabled and self.interactive:
            self.bar = keras.utils.Progbar(
                total_steps, stateful_metrics=["loss", "accuracy", "tok/s"], interval=0.5
            )

    def update(self, step, loss, accuracy, tokens_per_sec):
        if not self.enabled:
            return
        if self.interactive:
            values = [("loss", loss), ("accuracy", accuracy)]
            if tokens_per_sec:
                values.append(("tok/s", round(tokens_per_sec)))
            self.bar.update(step, values)
        elif step % self.every == 0 or step == self.total_steps:
            log(
                f"step {step}/{self.total_steps}: loss {loss:.4f}, accuracy {accuracy:.4f}, "
                f"{tokens_per_sec:.0f} tokens/s"
            )


def write_hparams(writer, options, model_config):
    from tensorboard.plugins.hparams import api as hparams_api

    flat = {}
    for key, value in {**options.to_dict(), **model_config.to_dict()}.items():
        if isinstance(value, (bool, int, float, str)):
            flat[key] = value
    with writer.as_default():
        hparams_api.hparams(flat)


# The job ---------------------------------------------------------------------------------------


def run(options, strategy=None):
    """Trains as `options` say and returns the final metrics (also written to metrics.json)."""
    started = restart_clock()
    paths = RunPaths(options.output)
    if strategy is None:
        distribute.split_cpu(options.cpu_devices)
        strategy = distribute.make_strategy(options.strategy)
    chief = distribute.is_chief(strategy)
    check_output_folder(options, paths)
    keras.config.set_dtype_policy(MIXED_PRECISION[options.mixed_precision])
    keras.utils.set_random_seed(options.seed)

    task = make_task(options, paths)
    model_config = task.prepare()
    replicas = strategy.num_replicas_in_sync
    pad_multiple = 8 if options.jit_compile else 1
    first_batches, padding = task.train_batches(options.seed, pad_multiple)
    steps_per_epoch = len(first_batches) // replicas
    if steps_per_epoch == 0:
        raise data_lib.DataError(
            f"{len(first_batches)} batch(es) cannot feed {replicas} replicas; use more data or a "
            "smaller --batch-tokens."
        )
    total_steps = options.epochs * steps_per_epoch
    if options.steps:
        total_steps = min(total_steps, options.steps)
    log(
        f"{task.describe_vocabulary()}; batches: {len(first_batches)} per epoch "
        f"({steps_per_epoch} steps x {replicas} replica(s)), padding {padding:.1%}; "
        f"{total_steps} steps; strategy {distribute.strategy_name(strategy)}"
    )

    if chief:
        os.makedirs(options.output, exist_ok=True)
        if not options.resume:
            task.save_vocabulary()
        write_json_atomic(
            paths.config, {"options": options.to_dict(), "model": model_config.to_dict()}
        )

    trainer = Trainer(options, model_config, strategy, paths, task)
    start_step = trainer.restore() if options.resume else 0
    if options.resume:
        log(f"resuming from step {start_step}")
    train_step = trainer.make_train_step()
    eval_step = trainer.make_eval_step()
    valid_batches = task.valid_batches()

    writers = {}
    if chief:
        writers = {
            "train": tf.summary.create_file_writer(os.path.join(paths.logs, "train")),
            "validation": tf.summary.create_file_writer(os.path.join(paths.logs, "validation")),
        }
        write_hparams(writers["train"], options, model_config)

    def evaluate(step):
        loss_sum = correct = tokens = 0.0
        for batch in valid_batches:
            batch_loss, batch_correct, batch_tokens = eval_step(*batch)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            tokens += float(batch_tokens)
        metrics = {
            "loss": loss_sum / max(tokens, 1.0),
            "accuracy": correct / max(tokens, 1.0),
            **task.evaluate(trainer.model),
        }
        with writers["validation"].as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
            task.write_summaries(trainer.model, valid_batches)
        writers["validation"].flush()
        return metrics

    progress = Progress(total_steps, chief)
    step = start_step
    interval_tokens, interval_start = 0.0, time.time()
    tokens_per_sec = 0.0
    trained_tokens, trained_seconds = 0.0, 0.0
    metrics = {}
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        batches, _ = task.train_batches(options.seed + epoch, pad_multiple)
        iterator = iter(distributed_batches(strategy, batches, steps_per_epoch, offset))
        for _ in range(offset, steps_per_epoch):
            if step >= total_steps:
                break
            loss_sum, correct, tokens = train_step(iterator)
            step += 1
            tokens = float(tokens)
            interval_tokens += tokens
            loss = float(loss_sum) / max(tokens, 1.0)
            accuracy = float(correct) / max(tokens, 1.0)
            if step % options.log_every == 0 or step == total_steps:
                elapsed = time.time() - interval_start
                tokens_per_sec = interval_tokens / max(elapsed, 1e-9)
                trained_tokens += interval_tokens
                trained_seconds += elapsed
                learning_rate = float(trainer.optimizer.learning_rate)
                if chief:
                    with writers["train"].as_default(step=step):
                        tf.summary.scalar("loss", loss)
                        tf.summary.scalar("accuracy", accuracy)
                        tf.summary.scalar("learning_rate", learning_rate)
                        tf.summary.scalar("tokens_per_sec", tokens_per_sec)
                interval_tokens, interval_start = 0.0, time.time()
            running_rate = interval_tokens / max(time.time() - interval_start, 1e-9)
            progress.update(step, loss, accuracy, running_rate if interval_tokens else tokens_per_sec)
            if step % options.checkpoint_every == 0:
                trainer.save_checkpoint()
            end_of_epoch = step % steps_per_epoch == 0
            due = (options.eval_every and step % options.eval_every == 0) or (
                not options.eval_every and end_of_epoch
            )
            if chief and (due or step == total_steps):
                pause = time.time()
                metrics = evaluate(step)
                interval_start += time.time() - pause  # evaluation is not training time
                log(
                    f"\nstep {step}: validation loss {metrics['loss']:.4f}, accuracy "
                    f"{metrics['accuracy']:.4f}, {task.describe_metrics(metrics)}"
                )
    if step != trainer.step:
        raise RuntimeError(f"step bookkeeping is off: {step} vs optimizer {trainer.step}")
    trainer.save_checkpoint()
    if not chief:
        return {}
    if not metrics:  # resumed at the end: nothing was evaluated in this process
        metrics = evaluate(step)

    results = {
        **metrics,
        "steps": step,
        "tokens_per_sec": trained_tokens / trained_seconds if trained_seconds else 0.0,
        "padding_fraction": padding,
        "train_examples": task.train_examples,
        **task.test_metrics(trainer.model),
    }
    with atomic_path(paths.model) as temporary:
        trainer.model.save(temporary)
    if options.export:
        exported = task.export(trainer.model)
        if exported:
            results["export"] = exported
            log(f"exported {exported}")
    results["seconds"] = time.time() - started
    write_json_atomic(paths.metrics, results)
    for writer in writers.values():
        writer.close()

    summary = task.report(results)
    log(
        f"\ndone: {step} steps in {results['seconds']:.0f} s, {results['tokens_per_sec']:.0f} target "
        f"tokens/s; {summary}\noutputs in {options.output}"
    )
    return results
