"""The examples in the public docstrings run and show what they say: every module listed here has
examples that run (none of them skipped all), and none fails."""
import doctest
import importlib

import pytest

MODULES = [
    # the core
    "entropy", "marks", "texts", "texts_table", "sampling", "manifest_entry", "files", "folder_lock", "args", "saver",
    "records", "toy", "layouts",
    # the format
    "format", "format.bounded", "format.schema", "format.reading", "format.lenient",
    # the tools
    "tools.stats", "tools.steps", "tools.report", "tools.convert", "tools.convert_npz", "tools.convert_jsonl",
    "tools.convert_trajectories",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"openrlhf_ext.trajectory.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no docstring example that runs"
    assert result.failed == 0


@pytest.mark.parametrize("name", ["common", "openrlhf"])
def test_integration_docstring_examples(name):
    module = importlib.import_module(f"openrlhf_ext.integrations.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
