"""The examples in the docstrings of the trainer-side modules (algorithm, model, data, reward, rollout,
Ray, utilities) run and show what they say."""
import doctest
import importlib
import json
import os
import subprocess
import sys

import pytest

MODULES = [
    "openrlhf_ext.algo.advantages",
    "openrlhf_ext.algo.experience",
    "openrlhf_ext.algo.kl",
    "openrlhf_ext.algo.losses",
    "openrlhf_ext.datasets.prompts",
    "openrlhf_ext.datasets.column_addition",
    "openrlhf_ext.rewards",
    "openrlhf_ext.rewards.math_verify_reward",
    "openrlhf_ext.rewards.remote",
    "openrlhf_ext.models.embedded",
    "openrlhf_ext.rollout.kv_cache",
    "openrlhf_ext.rollout.hf_generate",
    "openrlhf_ext.rollout.sequences",
    "openrlhf_ext.trainer.checkpoint",
    "openrlhf_ext.utils.device",
    "openrlhf_ext.utils.logging",
    "openrlhf_ext.utils.tensors",
]
# Examples that start a torch.distributed process group (DeepSpeed) or a Ray cluster: they run in a
# child process of their own, so that no test after them inherits that state.
PROCESS_MODULES = [
    "openrlhf_ext.ray.deepspeed_utils",
    "openrlhf_ext.ray.update",
    "openrlhf_ext.ray.launcher",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(scope="module")
def process_results():
    script = (
        "import doctest, importlib, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    r = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)\n"
        "    out[name] = [r.attempted, r.failed]\n"
        "print('RESULTS ' + json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", script, *PROCESS_MODULES], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS "):]), proc.stdout


@pytest.mark.parametrize("name", PROCESS_MODULES)
def test_docstring_examples_in_their_own_process(name, process_results):
    results, output = process_results
    attempted, failed = results[name]
    assert attempted > 0 and failed == 0, output[-3000:]
