"""The examples in the docstrings of the model/data/reward/advantage modules run and show what they say."""
import doctest
import importlib

import pytest

MODULES = [
    "openrlhf_ext.trainer.advantages",
    "openrlhf_ext.datasets.prompts",
    "openrlhf_ext.datasets.column_addition",
    "openrlhf_ext.rewards",
    "openrlhf_ext.rewards.math_verify_reward",
    "openrlhf_ext.rewards.remote",
    "openrlhf_ext.models.embedded",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
