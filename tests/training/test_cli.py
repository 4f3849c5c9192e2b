"""`python train.py --help`: every default said once, and the tasks' defaults from the registry."""

from tfx_transformer.tasks import TASKS
from tfx_transformer.training.cli import build_parser


def test_help_names_each_default_once():
    parser = build_parser()
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: [])" not in text
    for action in parser._actions:
        assert (action.help or "").count("(default") <= 1, action.option_strings


def test_task_defaults_in_the_help_come_from_the_task_classes():
    helps = {a.dest: a.help for a in build_parser()._actions}
    for name, task in TASKS.items():
        assert f"{name} {task.default_epochs}" in helps["epochs"]
        assert f"{name} {task.default_label_smoothing}" in helps["label_smoothing"]
        assert f"{name} {task.default_data}" in helps["data"]
