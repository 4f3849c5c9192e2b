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
import signal
import subprocess
import sys
import threading

import keras

from tfx_transformer.data import DataError
from tfx_transformer.files import atomic_path, write_json_atomic
from tfx_transformer.reporting import log, restart_clock
from tfx_transformer.runs import RunPaths, claimed
from tfx_transformer.tasks import task_class
from tfx_transformer.training import backends
from tfx_transformer.training.epochs import EpochBatches
from tfx_transformer.training.options import (
    MIN_DEFAULT_STEPS_PER_WARMUP,
    MIXED_PRECISION,
    UNBOUNDED_EPOCHS,
)
from tfx_transformer.training.progress import Progress
from tfx_transformer.training.resume import (
    check_checkpoints_readable,
    check_not_finished,
    check_output_folder,
    check_packing_agrees,
)
from tfx_transformer.training.selection import BestWeights, average, spaced
from tfx_transformer.training.stats import StepResults, TrainingStats
from tfx_transformer.training.timing import RunClock


@dataclasses.dataclass
class Job:
    """What a prepared run holds: its options, folder, placement, task, trainer and step plan."""

    options: object
    paths: RunPaths
    placement: backends.Placement
    task: object
    model_config: object
    trainer: object  # the engine's Trainer
    shapes: object  # how the task shapes its training batches (a data.BatchShapes)
    steps_per_epoch: int
    total_steps: int
    padding: float
    epoch_batches: EpochBatches  # each epoch's training batches, the next made while one trains

    @property
    def chief(self):
        return self.placement.chief


class TrainingInterrupted(Exception):
    """Ctrl-C during training; the message says where the run can resume from."""


def run(options, strategy=None, started=None):
    """Trains as `options` say and returns the final metrics (also written to metrics.json).

    `strategy`: a tf.distribute strategy to train under (TensorFlow backend), instead of the one
    --strategy names. Raises RunInUse when another process holds the folder, RunFinished on
    --resume of a finished run, TrainingInterrupted on Ctrl-C (the folder then resumes with
    --resume). `started`: when the job began (time.time(); default now), from which log times
    and --time-budget count: train.py passes its process's start, before its imports."""
    clock = RunClock(restart_clock(started), options.time_budget)
    paths = RunPaths(options.output)
    engine = backends.engine()
    placement = engine.setup(options, strategy)
    # Only the chief writes the folder; the other workers write scratch folders of their own.
    with claimed(paths, options.resume) if placement.chief else contextlib.nullcontext():
        job = prepare(options, paths, placement, engine)
        stats = TrainingStats(job.paths, job.chief)
        if job.chief:
            stats.write_hparams(options, job.model_config)
        evaluator = Evaluator(job, stats, clock)
        best = BestWeights(paths.checkpoints, job.task.selection_metric, job.chief, background=True)
        if options.resume:
            best.load()
        try:
            try:
                step, metrics = train(job, stats, evaluator, best)
            finally:
                job.epoch_batches.close()
            if not job.chief:
                return {}
            return finish(job, stats, evaluator, best, step, metrics)
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
    was_packed = None
    if placement.chief:
        # Only the chief's view counts: the other workers start beside it, and would find the
        # config.json it has just written.
        was_packed = check_output_folder(options, paths, placement.processes)
        if options.resume:
            check_checkpoints_readable(paths, keras.backend.backend())
    if placement.processes > 1 and (options.time_budget or options.early_stop):
        # Only the chief evaluates and keeps the time; the other workers could not know when
        # to stop, and would wait for it at the next step.
        raise ValueError(
            "--time-budget and --early-stop end training on the chief's decision, which the "
            f"other {placement.processes - 1} worker(s) do not share; on several workers, bound "
            "the run with --epochs or --steps."
        )
    policy = mixed_precision_policy(options.mixed_precision)
    keras.config.set_dtype_policy(policy)
    with backends.keras_without_tensorflow():
        keras.utils.set_random_seed(options.seed)

    task = task_class(options.task)(options, paths)
    model_config = task.prepare()
    task.place(placement.process_index, placement.processes, placement.gather)
    shapes, per_step = placement.batching(task.streams)
    shapes = packing_shapes(options, task, model_config, shapes)
    check_packing_agrees(options, was_packed, shapes.packed)
    first_batches, padding = task.train_batches(0, shapes)
    steps_per_epoch = len(first_batches) // per_step
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(first_batches)} batch(es) cannot feed {per_step} replicas; use more data or a "
            "smaller --batch-tokens."
        )
    epochs = options.planned_epochs(steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    if options.steps:
        total_steps = min(total_steps, options.steps)
    if options.resume:
        check_not_finished(paths, total_steps)
    warn_if_degenerate(options, task.train_examples, len(first_batches))
    log(
        f"{task.describe_vocabulary()}; batches: {len(first_batches)} per epoch "
        f"({steps_per_epoch} steps x {per_step} batch(es)), padding {padding:.1%}; "
        f"{describe_steps(options, task, epochs, total_steps)}; {keras.backend.backend()} "
        f"backend, {placement.name}, {placement.replicas} replica(s), {policy}"
    )
    if placement.chief:
        if not options.resume:
            task.save_vocabulary()
        write_json_atomic(
            paths.config,
            {"options": options.to_dict(), "model": model_config.to_dict(), "packed": shapes.packed},
        )
    trainer = engine.Trainer(options, model_config, placement, paths, task)
    if placement.shapes.fixed:
        buckets = len(placement.shapes.widths(model_config.max_length))
        if shapes.packed:
            rows, width = first_batches[0][0].shape
            log(f"training batches take one shape, {rows} x {width} (examples packed into rows), "
                f"validation batches at most {buckets} (one compilation of each step each)")
        else:
            log(f"batches take at most {buckets} shapes (one compilation of the step each)")
    last_epoch = (total_steps - 1) // steps_per_epoch
    epoch_batches = EpochBatches(task, shapes, last_epoch, first_batches,
                                 count=steps_per_epoch * per_step)
    return Job(options, paths, placement, task, model_config, trainer, shapes, steps_per_epoch,
               total_steps, padding, epoch_batches)


def packing_shapes(options, task, model_config, shapes):
    """`shapes`, packed as --packing says over the engine's default (a resumed run's choice,
    say), unpacked where the task cannot pack its training batches (an error where --packing
    asked for it)."""
    if options.packing and not shapes.packed:
        shapes = dataclasses.replace(shapes, packed=True)
    if not shapes.packed:
        return shapes
    if options.packing is False:
        return dataclasses.replace(shapes, packed=False)
    refusal = task.packing_refusal(model_config)
    if refusal is None:
        return shapes
    if options.packing:
        raise ValueError(f"--packing: {refusal}")
    return dataclasses.replace(shapes, packed=False)


def mixed_precision_policy(name):
    """The Keras dtype policy of --mixed-precision (auto: bf16 where it runs natively)."""
    if name == "auto":
        return MIXED_PRECISION["bf16"] if backends.bf16_is_fast() else MIXED_PRECISION["none"]
    return MIXED_PRECISION[name]


def describe_steps(options, task, epochs, total_steps):
    """The log's word on the steps planned, and why where the default epochs were raised."""
    if options.epochs is None and epochs > task.default_epochs:
        return (
            f"{total_steps} steps ({epochs} epochs: the default {task.default_epochs} would be "
            f"fewer than {MIN_DEFAULT_STEPS_PER_WARMUP} x the {options.warmup_steps} warm-up "
            "steps; --epochs or --steps sets them)"
        )
    return f"{total_steps} steps"


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

    def __init__(self, job, stats, clock):
        self.task = job.task
        self.stats = stats
        self.clock = clock
        self.trainer = job.trainer
        self.eval_step = job.trainer.make_eval_step()
        # Unpacked: the evaluations look at whole examples (summaries, attention images).
        self.batches = job.task.valid_batches(dataclasses.replace(job.placement.shapes, packed=False))

    @property
    def model(self):
        # Asked for when evaluating: with several JAX processes, process 0 alone builds its copy.
        return self.trainer.model

    def __call__(self, step):
        """The in-training evaluation of the trained weights at `step`, with its summaries;
        training time stops while it runs, and its duration feeds the time budget."""
        with self.stats.paused(), self.clock.evaluation():
            self.trainer.sync()
            metrics = self.measure(final=False)
            self.stats.write_validation(
                step, metrics,
                lambda writer, at: self.task.write_summaries(self.model, self.batches, writer, at),
            )
        return metrics

    def measure(self, final):
        """Loss and accuracy over the validation batches and the task's metrics, of the weights
        the model holds (the final evaluation sets them itself)."""
        # Every batch's step queued before any result is read: reading one waits for its step,
        # and the device would idle while the host queued the next.
        results = [self.eval_step(*batch) for batch in self.batches]
        loss_sum, correct, tokens = (sum(float(r[i]) for r in results) for i in range(3))
        self.trainer.wait_for_task_compilations(final)
        return {
            "loss": loss_sum / max(tokens, 1.0),
            "accuracy": correct / max(tokens, 1.0),
            **self.task.evaluate(self.model, final=final),
        }


# The training loop -----------------------------------------------------------------------------


def train(job, stats, evaluator, best):
    """Runs the steps from where the run stands to `total_steps`, or until --early-stop or
    --time-budget ends them; returns (the step reached, the last validation metrics or {} when
    none ran in this process)."""
    options, trainer = job.options, job.trainer
    step = trainer.restore() if options.resume else 0
    if options.resume:
        log(f"resuming from step {step}")
    bounded = options.epochs != UNBOUNDED_EPOCHS or options.steps
    progress = Progress(job.total_steps if bounded else None, job.chief)
    results = StepResults(stats, progress, options.log_every, job.total_steps, trainer.learning_rate)
    evaluator.clock.switch("training")
    with ctrl_c_between_steps() as ctrl_c:
        step, metrics, stop = train_steps(job, evaluator, best, results, step, ctrl_c)
    results.read()
    if stop:
        log(stop)
    if step != trainer.step:
        raise RuntimeError(f"step bookkeeping is off: {step} vs optimizer {trainer.step}")
    trainer.save_checkpoint()
    trainer.flush_checkpoints()  # written whole before the run's end reads or reports it
    best.wait()
    return step, metrics


@contextlib.contextmanager
def ctrl_c_between_steps():
    """Ctrl-C while training takes effect after the step in progress, as a KeyboardInterrupt
    raised between steps: raised wherever Python happens to be, it can land in a library's
    `__del__`, where Python prints it and carries on (TensorFlow's functions, collected while
    the next epoch's batches were made in a thread: the run trained on). A second Ctrl-C
    interrupts at once. Yields a list that holds the signal once it came."""
    received = []
    # Only the main thread gets signals; an ignored SIGINT (a job started in the background)
    # stays ignored.
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield received
        return

    def note(signum, frame):
        received.append(signum)
        signal.signal(signal.SIGINT, previous)
        print("\nCtrl-C: stopping after this step (again to stop at once)", file=sys.stderr,
              flush=True)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def train_steps(job, evaluator, best, results, step, ctrl_c):
    """The steps of `train`, evaluations and checkpoints among them; returns (the step reached,
    the last validation metrics, why training stopped early or None)."""
    options, trainer, task, clock = job.options, job.trainer, job.task, evaluator.clock
    candidates = 2 if options.average_last >= 2 else 1
    final_cost = task.final_evaluation_cost()  # the data's sizes: the same at every step
    metrics, stop = {}, None
    while step < job.total_steps and stop is None:
        epoch, offset = divmod(step, job.steps_per_epoch)
        batches = job.epoch_batches.batches(epoch)
        if options.compile_ahead:
            end = min(job.steps_per_epoch, offset + job.total_steps - step)
            trainer.compile_ahead(batches, offset, end, evaluator.batches if job.chief else ())
        for values in trainer.steps(batches, job.steps_per_epoch, offset):
            step += 1
            results.add(step, values)
            if step % options.checkpoint_every == 0:
                trainer.save_checkpoint()
            reserve = clock.reserve(final_cost, candidates, options.export)
            if clock.out_of_time(reserve):
                clock.stopped_by_budget = True
                left = options.time_budget - clock.elapsed()
                stop = (f"time budget: stopping at step {step} with {left:.0f} s left, {reserve:.0f} s "
                        "of it estimated for the final evaluation, test and export")
            due = step % options.evaluation_interval(job.steps_per_epoch) == 0
            if job.chief and (due or step == job.total_steps or stop):
                results.read()
                metrics = evaluator(step)
                improved = best.update(step, metrics, trainer.model)
                log(
                    f"\nstep {step}: validation loss {metrics['loss']:.4f}, accuracy "
                    f"{metrics['accuracy']:.4f}, {task.describe_metrics(metrics)}"
                    + (" (best so far)" if improved else f" (best: step {best.step})")
                )
                if options.early_stop and best.since >= options.early_stop and not stop:
                    stop = f"early stop: {best.since} evaluations without a better validation {best.name}"
            if ctrl_c:
                raise KeyboardInterrupt
            if step >= job.total_steps or stop:
                break
    return step, metrics, stop


# Finishing -------------------------------------------------------------------------------------


def finish(job, stats, evaluator, best, step, metrics):
    """On the chief: the final choice of weights (best on validation, or the average of the last
    checkpoints, whichever scores better on the whole validation set), test metrics,
    model.keras, the export and metrics.json; the last log lines."""
    options, paths, task, model = job.options, job.paths, job.task, job.trainer.model
    clock = evaluator.clock
    if not metrics and best.step is None:  # resumed at the end: nothing was evaluated yet
        metrics = evaluator(step)
        best.update(step, metrics, model)
    clock.switch("final evaluation")
    job.trainer.sync()
    chosen, results = choose_weights(job, evaluator, best)
    results.update({
        "steps": step,
        "tokens_per_sec": stats.average_tokens_per_sec,
        "padding_fraction": job.padding,
        "train_examples": task.train_examples,
        **task.data_statistics(),
        **task.test_metrics(model),
    })
    clock.switch("saving and export")
    with atomic_path(paths.model) as temporary, backends.keras_without_tensorflow():
        model.save(temporary)
    if options.export and task.serving_class is None:
        log(f"no SavedModel export for --task {task.name}: model.keras is the trained model")
    elif options.export:
        results["export"] = export(paths, model, task)
        if results["export"]:
            log(f"exported {results['export']}")
    results["time"] = clock.summary()
    results["seconds"] = results["time"]["total"]
    write_json_atomic(paths.metrics, results)
    stats.close()
    summary = task.report(results)
    log(clock.describe())
    log(
        f"\ndone: {step} steps in {results['seconds']:.0f} s, {results['tokens_per_sec']:.0f} target "
        f"tokens/s; {chosen} weights; {summary}\noutputs in {options.output}"
    )
    return results


def choose_weights(job, evaluator, best):
    """Scores each candidate (the best weights on validation; with --average-last N, the average
    of the last N checkpoints, `spaced`) with the final evaluation, leaves the better in the model and
    returns (its name, its metrics with every candidate's under "candidates")."""
    options, trainer = job.options, job.trainer
    candidates = {"best": (best.weights(), {"step": best.step})}
    steps = []
    if options.average_last >= 2:
        by_step = {checkpoint_step(path): path for path in trainer.checkpoint_paths()}
        steps = spaced(by_step, options.checkpoint_every)[-options.average_last:]
    if len(steps) >= 2:
        averaged = average([trainer.trainable_at(by_step[step]) for step in steps])
        candidates["averaged"] = (averaged, {"checkpoints": steps})
    task = job.task
    name, direction = task.selection_metric
    scored, shown = {}, {}
    for candidate, (weights, origin) in candidates.items():
        trainer.assign_trainable(weights)
        scored[candidate] = {**evaluator.measure(final=True), **origin}
        # What the task shows at the end (sample outputs) is of the last weights it evaluated.
        shown[candidate] = {attribute: getattr(task, attribute) for attribute in task.shown_attributes}
        log(f"final validation, {candidate} weights ({describe_origin(origin)}): "
            f"{task.describe_metrics(scored[candidate])}")
    sign = 1.0 if direction == "max" else -1.0
    # On equal scores (an easy set saturates), the lower validation loss.
    chosen = max(scored, key=lambda candidate: (sign * scored[candidate][name],
                                                -scored[candidate]["loss"]))
    if len(scored) > 1:
        trainer.assign_trainable(candidates[chosen][0])
        for attribute, value in shown[chosen].items():
            setattr(task, attribute, value)
        log(f"keeping the {chosen} weights (validation {name} {scored[chosen][name]:.4g})")
    results = {key: value for key, value in scored[chosen].items() if key not in ("step", "checkpoints")}
    results["weights"] = chosen
    results["candidates"] = scored
    return chosen, results


def describe_origin(origin):
    if "step" in origin:
        return f"step {origin['step']}"
    return f"average of steps {', '.join(map(str, origin['checkpoints']))}"


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
