"""The examples in the public docstrings run and show what they say."""
import doctest
import importlib

import pytest

MODULES = ["entropy", "marks", "sampling", "stats", "files", "schema", "args", "saver", "records",
           "report", "convert", "convert_npz", "convert_jsonl", "layouts"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"openrlhf_ext.trajectory.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("name", ["common", "openrlhf"])
def test_integration_docstring_examples(name):
    module = importlib.import_module(f"openrlhf_ext.integrations.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
