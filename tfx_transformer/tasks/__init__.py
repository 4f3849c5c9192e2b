"""The tasks `python train.py --task NAME` trains, by name: the registry.

Each task is one folder (its data, vocabulary, metrics, task class and serving graph) and one line
here. A new task subclasses `tasks.base.Task` (or `SentencePieceTask`) in its own folder and adds
itself to `TASKS`; training and export find it here and import nothing of it themselves.
"""

from tfx_transformer.tasks.base import Task
from tfx_transformer.tasks.lm.task import LanguageModelTask
from tfx_transformer.tasks.tagging.task import TaggingTask
from tfx_transformer.tasks.translation.task import TranslationTask

TASKS = {task.name: task for task in (TranslationTask, TaggingTask, LanguageModelTask)}


def task_class(name):
    """The Task class registered as `name`."""
    if name not in TASKS:
        raise ValueError(f"--task must be one of {tuple(TASKS)}. Received: {name!r}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "task_class"]
