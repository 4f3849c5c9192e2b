"""The rules of a run folder: a new run never writes over an old one, --resume continues a run
only with the options it was started with (but those in RESUMABLE_CHANGES), and a finished run
is left as it is."""

import json
import os

class RunFinished(Exception):
    """--resume on a run that has done all its steps: nothing to do, nothing changed."""


# Options that may change when a run is resumed; every other one must match the saved run.
RESUMABLE_CHANGES = ("epochs", "steps", "resume", "strategy", "cpu_devices", "export", "time_budget",
                     "early_stop", "average_last", "allow_misaligned", "compile_ahead")


def check_output_folder(options, paths, processes=1):
    """A new run never writes over an old one; --resume needs the old one's config (of a run
    that `processes` processes train)."""
    if options.resume:
        if not os.path.exists(paths.config):
            raise ValueError(f"--resume: {paths.config} does not exist; there is no run to resume.")
        config = paths.saved_config()
        saved = config["options"]
        if trained_before_packing(config):  # such a run trained unpacked
            saved["packing"] = False
            if options.packing is None and processes == 1:
                options.packing = False  # and goes on so
            elif options.packing is None:  # the other processes cannot know: they must be told
                raise ValueError(f"--resume: {options.output} trained unpacked; add "
                                 "--no-packing to every process's command to go on so.")
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


def trained_before_packing(config):
    """Whether a saved run's config.json is older than its task's packing: translation runs
    saved before packing existed have no "packing" option; tagging runs saved before the tagger
    packed have no "packed" (what a run writes since: whether it packs)."""
    options = config["options"]
    if "packing" not in options:
        return True
    return options.get("task") == "tagging" and "packed" not in config


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
