"""`environment`: variables set inside a block, and afterwards as they were (set or unset)."""

import os

import pytest

from tfx_transformer.environment import environment


def test_variables_are_set_inside_and_put_back_afterwards(monkeypatch):
    monkeypatch.setenv("TFXT_TEST_KEPT", "before")
    monkeypatch.delenv("TFXT_TEST_NEW", raising=False)
    with environment({"TFXT_TEST_KEPT": "inside", "TFXT_TEST_NEW": "1"}):
        assert (os.environ["TFXT_TEST_KEPT"], os.environ["TFXT_TEST_NEW"]) == ("inside", "1")
    assert os.environ["TFXT_TEST_KEPT"] == "before" and "TFXT_TEST_NEW" not in os.environ
    with pytest.raises(RuntimeError), environment({"TFXT_TEST_NEW": "2"}):
        raise RuntimeError("the block fails")
    assert "TFXT_TEST_NEW" not in os.environ
