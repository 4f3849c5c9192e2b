"""The rules of a run folder: a new run never writes over an old one, --resume continues a run
only with the options it was started with (but those in RESUMABLE_CHANGES), and a finished run
is left as it is."""

import dataclasses
import json
import os
import re

from tfx_transformer.training import checkpoints


class RunFinished(Exception):
    """--resume on a run that has done all its steps: nothing to do, nothing changed."""


# The checkpoint files each training engine writes (its Keras backend's): tf.train.Checkpoint's
# index beside its data, or ArrayCheckpoints' arrays.
CHECKPOINT_FILES = {"tensorflow": re.compile(r"^ckpt-(\d+)\.index$"), "jax": checkpoints.NAME}

# Options that may change when a run is resumed; every other one must match the saved run.
RESUMABLE_CHANGES = ("epochs", "steps", "resume", "strategy", "cpu_devices", "export", "time_budget",
                     "early_stop", "average_last", "allow_misaligned", "compile_ahead")


def check_output_folder(options, paths, processes=1):
    """A new run never writes over an old one; --resume needs the old one's config (of a run
    that `processes` processes train). Returns whether the resumed run trained on packed rows
    (None for a new run, or a saved run that does not say)."""
    if options.resume:
        if not os.path.exists(paths.config):
            raise ValueError(f"--resume: {paths.config} does not exist; there is no run to resume.")
        config = paths.saved_config()
        saved = config["options"]
        was_packed = saved_packing(config)
        given = options.packing
        if given is None and was_packed is not None and processes == 1:
            # Without a word about packing, a resumed run goes on as it trained (a run of the
            # other backend, or saved before packing, included). Several processes cannot all
            # read the chief's folder: `prepare` tells them what to say where they differ.
            options.packing = was_packed
        # An option newer than the saved run counts as set to its default there.
        saved = {**option_defaults(options), **saved}
        mismatched = {
            key: (saved.get(key), value)
            for key, value in options.to_dict().items()
            if key not in RESUMABLE_CHANGES + ("output", "packing") and saved.get(key) != value
        }
        if given is not None and given != was_packed:
            mismatched["packing"] = (was_packed, given)
        if mismatched:
            details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
            raise ValueError(f"--resume with options that differ from the saved run: {details}")
        return was_packed
    leftovers = [p for p in (paths.config, paths.checkpoints, paths.model) if os.path.exists(p)]
    if leftovers:
        raise ValueError(
            f"{options.output} already holds a run ({', '.join(os.path.basename(p) for p in leftovers)}). "
            "Pass --resume to continue it, or choose another --output."
        )


def option_defaults(options):
    """{name: default} of the options dataclass `options` (packing aside: see saved_packing)."""
    defaults = {}
    for field in dataclasses.fields(options):
        if field.name != "packing":
            has_factory = field.default_factory is not dataclasses.MISSING
            defaults[field.name] = field.default_factory() if has_factory else field.default
    return defaults


def check_packing_agrees(options, was_packed, packed):
    """A resumed run packs (`packed`) as it trained (`was_packed`, from check_output_folder);
    where several processes were told nothing, the chief says what they must be told."""
    if was_packed is not None and packed != was_packed:
        raise ValueError(
            f"--resume: {options.output} trained {'packed' if was_packed else 'unpacked'}; add "
            f"{'--packing' if was_packed else '--no-packing'} to every process's command to go on so."
        )


def saved_packing(config):
    """Whether a saved run's config.json says it trained on packed rows: what it wrote
    ("packed"), or its --packing/--no-packing; False for a run saved before its task packed
    (translation runs saved before packing existed have no "packing" option; tagging runs saved
    before the tagger packed have no "packed"); None where it does not say."""
    options = config["options"]
    if "packing" not in options or (options.get("task") == "tagging" and "packed" not in config):
        return False
    return config.get("packed", options["packing"])


def check_checkpoints_readable(paths, backend):
    """--resume on the backend that wrote the run's newest checkpoint: each engine reads only
    its own format, and the other's would train again from its last own checkpoint, or from step
    0, over what the run had done."""
    if not os.path.isdir(paths.checkpoints):
        return
    newest = {engine: -1 for engine in CHECKPOINT_FILES}
    for name in os.listdir(paths.checkpoints):
        for engine, pattern in CHECKPOINT_FILES.items():
            match = pattern.match(name)
            if match:
                newest[engine] = max(newest[engine], int(match.group(1)))
    writer = max(newest, key=newest.get)
    if newest[writer] > newest.get(backend, -1):
        raise ValueError(
            f"--resume: the newest checkpoint of {paths.output} (step {newest[writer]}) was written "
            f"on the {writer} backend, and each backend reads only its own checkpoints: resume "
            f"with KERAS_BACKEND={writer}."
        )


def check_not_finished(paths, total_steps):
    """--resume of a run whose metrics.json says it has done `total_steps` already."""
    if not os.path.exists(paths.metrics):
        return
    with open(paths.metrics, encoding="utf-8") as f:
        done = json.load(f).get("steps", 0)
    if done >= total_steps:
        raise RunFinished(
            f"{paths.output} is finished: {done} of {total_steps} steps done and metrics.json "
            "written; nothing to resume. To train further, raise --epochs or --steps."
        )
