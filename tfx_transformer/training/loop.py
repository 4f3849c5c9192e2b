"""The training job behind `python train.py`: `run` prepares the run (data, vocabulary, model,
folder), trains (distributed steps, TensorBoard, evaluation, checkpoints, resume) and finishes
(test metrics, model.keras, the export, metrics.json). The files are those of `runs.RunPaths`.

The steps run on the Keras backend's engine (`training.backends`): TensorFlow or JAX. This
module imports neither, so that a JAX run needs no TensorFlow until its export.
"""

import contextlib
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import time

import keras

from tfx_transformer.data import DataError
from tfx_transformer.files import atomic_path, write_json_atomic
from tfx_transformer.reporting import log, restart_clock
from tfx_transformer.runs import RunPaths, claimed
from tfx_transformer.tasks import task_class
from tfx_transformer.training import backends
from tfx_transformer.training.options import MIXED_PRECISION
from tfx_transformer.training.progress import Progress
from tfx_transformer.training.resume import check_not_finished, check_output_folder
from tfx_transformer.training.stats import TrainingStats


@dataclasses.dataclass
class Job:
    """What a prepared run holds: its options, folder, placement, task, trainer and step plan."""

    options: object
    paths: RunPaths
    placement: backends.Placement
    task: object
    model_config: object
    trainer: object  # the engine's Trainer
    steps_per_epoch: int
    total_steps: int
    padding: float

    @property
    def chief(self):
        return self.placement.chief


class TrainingInterrupted(Exception):
    """Ctrl-C during training; the message says where the run can resume from."""


def run(options, strategy=None):
    """Trains as `options` say and returns the final metrics (also written to metrics.json).

    `strategy`: a tf.distribute strategy to train under (TensorFlow backend), instead of the one
    --strategy names. Raises RunInUse when another process holds the folder, RunFinished on
    --resume of a finished run, TrainingInterrupted on Ctrl-C (the folder then resumes with
    --resume)."""
    started = restart_clock()
    paths = RunPaths(options.output)
    engine = backends.engine()
    placement = engine.setup(options, strategy)
    # Only the chief writes the folder; the other workers write scratch folders of their own.
    with claimed(paths) if placement.chief else contextlib.nullcontext():
        job = prepare(options, paths, placement, engine)
        stats = TrainingStats(job.paths, job.chief)
        if job.chief:
            stats.write_hparams(options, job.model_config)
        evaluator = Evaluator(job, stats)
        try:
            step, metrics = train(job, stats, evaluator)
            if not job.chief:
                return {}
            return finish(job, stats, evaluator, step, metrics, started)
        except KeyboardInterrupt:
            raise TrainingInterrupted(interruption_message(job)) from None


def interruption_message(job):
    latest = job.trainer.latest_checkpoint
    where = (
        f"its last checkpoint is step {checkpoint_step(latest)} ({latest})"
        if latest else "no checkpoint was written yet"
    )
    return (
        f"training stopped at step {job.trainer.step}; {where}. Continue with the same command "
        "and --resume."
    )


def checkpoint_step(path):
    """The step in a checkpoint's name: ckpt-120 (TensorFlow's) or ckpt-120.npz (JAX's)."""
    return int(re.search(r"ckpt-(\d+)(\.npz)?$", path).group(1))


# Preparing a run -------------------------------------------------------------------------------


def prepare(options, paths, placement, engine):
    """Checks the (claimed) folder, reads the data and vocabulary, plans the steps, writes
    config.json and the vocabulary, builds the trainer."""
    check_output_folder(options, paths)
    policy = mixed_precision_policy(options.mixed_precision)
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(options.seed)

    task = task_class(options.task)(options, paths)
    model_config = task.prepare()
    per_step = placement.batches_per_step
    first_batches, padding = task.train_batches(options.seed, placement.shapes)
    steps_per_epoch = len(first_batches) // per_step
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(first_batches)} batch(es) cannot feed {per_step} replicas; use more data or a "
            "smaller --batch-tokens."
        )
    total_steps = options.epochs * steps_per_epoch
    if options.steps:
        total_steps = min(total_steps, options.steps)
    if options.resume:
        check_not_finished(paths, total_steps)
    warn_if_degenerate(options, task.train_examples, len(first_batches))
    log(
        f"{task.describe_vocabulary()}; batches: {len(first_batches)} per epoch "
        f"({steps_per_epoch} steps x {per_step} batch(es)), padding {padding:.1%}; "
        f"{total_steps} steps; {keras.backend.backend()} backend, {placement.name}, "
        f"{placement.replicas} replica(s), {policy}"
    )
    if placement.chief:
        if not options.resume:
            task.save_vocabulary()
        write_json_atomic(
            paths.config, {"options": options.to_dict(), "model": model_config.to_dict()}
        )
    trainer = engine.Trainer(options, model_config, placement, paths, task)
    if placement.shapes.fixed:
        log(f"batches take at most {len(placement.shapes.widths(model_config.max_length))} "
            "shapes (one compilation of the step each)")
    return Job(options, paths, placement, task, model_config, trainer, steps_per_epoch,
               total_steps, padding)


def mixed_precision_policy(name):
    """The Keras dtype policy of --mixed-precision (auto: bf16 on an accelerator)."""
    if name == "auto":
        return MIXED_PRECISION["bf16"] if backends.on_accelerator() else MIXED_PRECISION["none"]
    return MIXED_PRECISION[name]


def warn_if_degenerate(options, examples, batches):
    """A run that trains, but hardly as asked: say so before the steps start."""
    per_batch = examples / max(batches, 1)
    if per_batch < 2:
        log(
            f"warning: --batch-tokens {options.batch_tokens} leaves {per_batch:.1f} examples per "
            "batch; raise it (a batch holds as many examples as fit its token budget)."
        )


# Evaluation ------------------------------------------------------------------------------------


class Evaluator:
    """Validation loss and accuracy over the validation batches, the task's own metrics, and
    their TensorBoard summaries."""

    def __init__(self, job, stats):
        self.task = job.task
        self.model = job.trainer.model
        self.stats = stats
        self.trainer = job.trainer
        self.eval_step = job.trainer.make_eval_step()
        self.batches = job.task.valid_batches(job.placement.shapes)

    def __call__(self, step):
        self.trainer.sync()
        loss_sum = correct = tokens = 0.0
        for batch in self.batches:
            batch_loss, batch_correct, batch_tokens = self.eval_step(*batch)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            tokens += float(batch_tokens)
        metrics = {
            "loss": loss_sum / max(tokens, 1.0),
            "accuracy": correct / max(tokens, 1.0),
            **self.task.evaluate(self.model),
        }
        self.stats.write_validation(
            step, metrics,
            lambda writer, at: self.task.write_summaries(self.model, self.batches, writer, at),
        )
        return metrics


# The training loop -----------------------------------------------------------------------------


def train(job, stats, evaluator):
    """Runs the steps from where the run stands to `total_steps`; returns (the step reached,
    the last validation metrics or {} when none ran in this process)."""
    options, trainer, task = job.options, job.trainer, job.task
    step = trainer.restore() if options.resume else 0
    if options.resume:
        log(f"resuming from step {step}")
    progress = Progress(job.total_steps, job.chief)
    metrics = {}
    while step < job.total_steps:
        epoch, offset = divmod(step, job.steps_per_epoch)
        batches, _ = task.train_batches(options.seed + epoch, job.placement.shapes)
        for loss_sum, correct, tokens in trainer.steps(batches, job.steps_per_epoch, offset):
            step += 1
            tokens = float(tokens)
            stats.add(tokens)
            loss = float(loss_sum) / max(tokens, 1.0)
            accuracy = float(correct) / max(tokens, 1.0)
            if step % options.log_every == 0 or step == job.total_steps:
                stats.close_interval(step, loss, accuracy, trainer.learning_rate())
            progress.update(step, loss, accuracy, stats.running_rate())
            if step % options.checkpoint_every == 0:
                trainer.save_checkpoint()
            if job.chief and (evaluation_due(options, step, job.steps_per_epoch) or step == job.total_steps):
                with stats.paused():
                    metrics = evaluator(step)
                log(
                    f"\nstep {step}: validation loss {metrics['loss']:.4f}, accuracy "
                    f"{metrics['accuracy']:.4f}, {task.describe_metrics(metrics)}"
                )
            if step >= job.total_steps:
                break
    if step != trainer.step:
        raise RuntimeError(f"step bookkeeping is off: {step} vs optimizer {trainer.step}")
    trainer.save_checkpoint()
    return step, metrics


def evaluation_due(options, step, steps_per_epoch):
    """Every --eval-every steps, or at the end of every epoch when it is 0."""
    if options.eval_every:
        return step % options.eval_every == 0
    return step % steps_per_epoch == 0


# Finishing -------------------------------------------------------------------------------------


def finish(job, stats, evaluator, step, metrics, started):
    """On the chief: test metrics, model.keras, the export and metrics.json; the last log lines."""
    options, paths, task, model = job.options, job.paths, job.task, job.trainer.model
    if not metrics:  # resumed at the end: nothing was evaluated in this process
        metrics = evaluator(step)
    job.trainer.sync()
    results = {
        **metrics,
        "steps": step,
        "tokens_per_sec": stats.average_tokens_per_sec,
        "padding_fraction": job.padding,
        "train_examples": task.train_examples,
        **task.test_metrics(model),
    }
    with atomic_path(paths.model) as temporary:
        model.save(temporary)
    if options.export and task.serving_class is None:
        log(f"no SavedModel export for --task {task.name}: model.keras is the trained model")
    elif options.export:
        results["export"] = export(paths, model, task)
        if results["export"]:
            log(f"exported {results['export']}")
    results["seconds"] = time.time() - started
    write_json_atomic(paths.metrics, results)
    stats.close()
    summary = task.report(results)
    log(
        f"\ndone: {step} steps in {results['seconds']:.0f} s, {results['tokens_per_sec']:.0f} target "
        f"tokens/s; {summary}\noutputs in {options.output}"
    )
    return results


def export(paths, model, task):
    """The SavedModel of a finished run: written here on TensorFlow; from JAX, by
    `python -m tfx_transformer.export` in a TensorFlow-backend process when TensorFlow is
    installed (it reads model.keras), else skipped with how to export later. Returns its path,
    or None when skipped."""
    settings = task.export_settings()
    if keras.backend.backend() == "tensorflow":
        from tfx_transformer.export import export_run  # TensorFlow: imported only to export

        return export_run(paths.output, model=model, vocabulary=task.vocabulary, **settings)
    command = [sys.executable, "-m", "tfx_transformer.export", "--run", paths.output]
    for name, value in settings.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    if not tensorflow_installed():
        log(
            "no SavedModel export: it needs TensorFlow, which is not installed here. model.keras "
            f"is the trained model; export it on a machine with TensorFlow: {' '.join(command[1:])}"
        )
        return None
    log("exporting with TensorFlow (a process on the TensorFlow backend reads model.keras)")
    result = subprocess.run(
        command, capture_output=True, text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the export failed (model.keras is saved; retry with {' '.join(command[1:])}):\n"
            + result.stderr[-2000:]
        )
    return result.stdout.strip().splitlines()[-1]


def tensorflow_installed():
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a broken install
        return False
