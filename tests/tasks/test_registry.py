"""The task registry: each name leads to its class, imported when first asked for."""

import pytest

from tfx_transformer.tasks import REGISTRY, TASKS, Task, task_class


def test_each_registered_name_is_its_task_class_name():
    assert list(TASKS) == list(REGISTRY) == ["translation", "tagging", "lm"]
    for name, task in TASKS.items():
        assert task_class(name) is task and task.name == name and issubclass(task, Task)


def test_an_unknown_task_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"one of \('translation', 'tagging', 'lm'\).*'parse'"):
        task_class("parse")
