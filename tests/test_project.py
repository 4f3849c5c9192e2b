"""The project's own promises: CI runs exactly the test command that README gives."""


from tests import ROOT

TEST_COMMAND = 'python -m pip install -e ".[test]" && python -m pytest'


def test_readme_and_ci_share_the_test_command():
    assert TEST_COMMAND in (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci_lines
