"""The tasks `python train.py --task NAME` trains, by name: the registry.

Each task is one folder (its data, vocabulary, metrics, task class and serving graph) and one line
here. A new task subclasses `tasks.base.Task` (or `SentencePieceTask`) in its own folder and adds
itself to `REGISTRY`; training and export find it here and import nothing of it themselves.
"""

import importlib

# --task name -> "module:class". A task is imported when first asked for, so that a process that
# only prepares data (`tasks.translation.prepare`) imports no model code.
REGISTRY = {
    "translation": "tfx_transformer.tasks.translation.task:TranslationTask",
    "tagging": "tfx_transformer.tasks.tagging.task:TaggingTask",
    "lm": "tfx_transformer.tasks.lm.task:LanguageModelTask",
}


def task_class(name):
    """The Task class registered as `name`."""
    if name not in REGISTRY:
        raise ValueError(f"--task must be one of {tuple(REGISTRY)}. Received: {name!r}")
    module, _, attribute = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def __getattr__(name):
    """`TASKS` (every task by name, all imported) and the base class `Task`, on first use."""
    if name == "TASKS":
        return {task: task_class(task) for task in REGISTRY}
    if name == "Task":
        return importlib.import_module("tfx_transformer.tasks.base").Task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REGISTRY", "TASKS", "Task", "task_class"]
