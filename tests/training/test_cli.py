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


def test_a_run_says_only_what_matters_on_stderr(tmp_path):
    """TensorFlow's start-up lines (CUDA probing, oneDNN) are not shown without --verbose."""
    import os
    import subprocess
    import sys

    from tests import ROOT

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--output", str(a_file)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --output {a_file} is a file; a run needs a folder."
    ]


def test_the_saved_help_is_the_parsers_and_prints_without_tensorflow():
    import os
    import subprocess
    import sys

    from tests import ROOT
    from tfx_transformer.training.cli import HELP_FILE, format_help
    from tests.training.test_jax_training import WITHOUT_TENSORFLOW

    with open(HELP_FILE, encoding="utf-8") as f:
        saved = f.read()
    assert saved == format_help(), (
        "the flags changed: python -c 'from tfx_transformer.training.cli import write_help; write_help()'"
    )
    result = subprocess.run(
        # On the TensorFlow backend, importing Keras (or the package) would import TensorFlow.
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(ROOT / "train.py"), "--help"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == saved


def test_run_ending_options_are_checked_and_preset_defaults_fill_the_rest():
    import pytest

    from tfx_transformer.training.cli import options_from_args
    from tfx_transformer.training.options import PRESET_TRAINING, UNBOUNDED_EPOCHS

    for flags, message in ((["--time-budget", "0"], "--time-budget must be a positive"),
                           (["--average-last", "-1"], "--average-last must be 0 or more"),
                           (["--early-stop", "-2"], "--early-stop must be 0 or more"),
                           (["--learning-rate-scale", "0"], "--learning-rate-scale must be positive")):
        with pytest.raises(ValueError, match=message):
            options_from_args(flags)
    small = options_from_args(["--preset", "small"])
    assert small.batch_tokens == PRESET_TRAINING["small"]["batch_tokens"] == 1536
    assert small.learning_rate_scale == 0.5 and small.epochs is None  # the task's, by the data
    assert options_from_args(["--preset", "small", "--batch-tokens", "999"]).batch_tokens == 999
    budgeted = options_from_args(["--time-budget", "60"])
    assert budgeted.epochs == UNBOUNDED_EPOCHS  # the budget alone ends training
    assert options_from_args(["--time-budget", "60", "--epochs", "2"]).epochs == 2
    assert options_from_args(["--steps", "5000"]).epochs == UNBOUNDED_EPOCHS  # steps alone, too
    assert options_from_args(["--steps", "5000", "--epochs", "2"]).epochs == 2


def test_packing_is_asked_of_translation_and_tagging_without_linformer_only():
    import pytest

    from tfx_transformer.training.cli import options_from_args

    assert options_from_args([]).packing is None  # the backend decides
    assert options_from_args(["--packing"]).packing is True
    assert options_from_args(["--no-packing"]).packing is False
    assert options_from_args(["--task", "tagging", "--packing"]).packing is True
    with pytest.raises(ValueError, match="--packing: the lm task does not pack"):
        options_from_args(["--task", "lm", "--packing"])
    for task in ("translation", "tagging"):
        with pytest.raises(ValueError, match="--packing: Linformer"):
            options_from_args(["--task", task, "--packing", "--set", "linformer_length=8"])
    options_from_args(["--no-packing", "--set", "linformer_length=8"])
