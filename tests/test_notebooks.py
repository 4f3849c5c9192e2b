"""Every notebook runs top to bottom as a notebook (jupytext -> nbclient) on this machine."""

import os

import pytest

from tests import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_every_question_has_its_heading_and_a_readme_line():
    text = "\n".join(path.read_text(encoding="utf-8") for path in NOTEBOOKS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for number in range(1, 17):
        assert f"# ## {number}. " in text, f"question {number} has no heading"
        line = next(l for l in readme.splitlines() if l.startswith(f"{number}. "))
        linked = line.split("(notebooks/")[1].split(")")[0]
        assert f"# ## {number}. " in (ROOT / "notebooks" / linked).read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    notebook = jupytext.read(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
