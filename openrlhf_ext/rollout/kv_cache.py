"""How much memory a vLLM engine's KV cache gets, in bytes, and a start-up check that it fits.

vLLM sizes its KV cache from `gpu_memory_utilization`: a fraction of the device's *total* memory,
minus what the process already holds. On a GPU that is the usual knob. On a CPU the "device" is
the NUMA node vLLM's worker is bound to (on a 2-core CI box, a 10.7 GiB node while `free` shows
23 GiB), so the same fraction means different things on different machines, and a small one
goes negative once the model is loaded. So on CPU the cache is always given in bytes
(`kv_cache_memory_bytes`), and on both we check before vLLM starts that the request fits, with a
message that says which flag to change.

    >>> parse_size("512MiB"), parse_size("1.5G"), parse_size("4096")
    (536870912, 1610612736, 4096)
    >>> kv_bytes_per_token(num_layers=2, num_kv_heads=4, head_dim=64, dtype_bytes=4)
    4096
"""
from __future__ import annotations

import math
import os
import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
# The default CPU cache: room for every sequence of an engine's rollout batch, capped at this much
# (past it, vLLM schedules in waves instead of failing) and never below one full-length sequence.
CPU_DEFAULT_CAP_BYTES = 1 << 30


def parse_size(text: str) -> int:
    """A memory size such as ``512MiB``, ``2G`` or ``1048576`` (bytes), as an int of bytes.
    Units are binary (k = 1024). Raises ValueError on anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"expected a size such as 512MiB, 2GiB or a number of bytes, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"a KV cache size must be above 0, got {text!r}")
    return value


def format_gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes one token takes in the KV cache: a key and a value per layer and KV head."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def model_kv_bytes_per_token(pretrain: str, bf16: bool) -> int:
    """`kv_bytes_per_token` read from a Hugging Face model folder's config."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(pretrain)
    cfg = getattr(cfg, "text_config", None) or cfg
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return kv_bytes_per_token(cfg.num_hidden_layers, kv_heads, head_dim, 2 if bf16 else 4)


def default_cpu_kv_cache_bytes(bytes_per_token: int, max_model_len: int, num_seqs: int,
                               cap: int = CPU_DEFAULT_CAP_BYTES) -> int:
    """Room for ``num_seqs`` sequences of ``max_model_len`` tokens, capped at ``cap``, and never
    less than one full sequence (vLLM refuses a cache that cannot hold one).

    Example:
        >>> default_cpu_kv_cache_bytes(4096, max_model_len=72, num_seqs=64)   # 64 x 72 tokens x 4 KiB
        18874368
        >>> default_cpu_kv_cache_bytes(1 << 20, max_model_len=4096, num_seqs=64) == 4 << 30  # one sequence
        True
    """
    one_seq = bytes_per_token * max_model_len
    return max(one_seq, min(one_seq * max(num_seqs, 1), cap))


def cpu_node_memory(node: int | None = None) -> tuple[int, int, int]:
    """``(node, total, available)`` bytes of the NUMA node a CPU vLLM worker sizes itself from:
    the node of the first CPU this process may run on (vLLM's choice), from
    /sys/devices/system/node; the whole machine where there is no NUMA information."""
    if node is None:
        node = _node_of_cpu(min(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 0
    info = {}
    try:
        with open(f"/sys/devices/system/node/node{node}/meminfo") as f:
            for line in f:  # "Node 0 MemTotal:  12413132 kB"
                parts = line.split()
                if len(parts) >= 4:
                    info[parts[2].rstrip(":")] = int(parts[3]) * 1024
        # What vLLM counts as available on a node: free memory plus reclaimable caches.
        reclaimable = sum(info.get(k, 0) for k in ("Active(file)", "Inactive(file)", "SReclaimable"))
        return node, info["MemTotal"], info["MemFree"] + reclaimable
    except (OSError, KeyError, ValueError):
        import psutil

        vm = psutil.virtual_memory()
        return node, vm.total, vm.available


def _node_of_cpu(cpu: int) -> int:
    base = f"/sys/devices/system/cpu/cpu{cpu}"
    try:
        for name in os.listdir(base):
            if name.startswith("node") and name[4:].isdigit():
                return int(name[4:])
    except OSError:
        pass
    return 0


def cpu_kv_cache_problem(kv_bytes: int, node: int, available: int, total: int) -> str | None:
    """The start-up check on CPU: None when ``kv_bytes`` fits the node's available memory, else
    a sentence that says what to change.

    Example:
        >>> cpu_kv_cache_problem(1 << 30, 0, available=8 << 30, total=10 << 30) is None
        True
        >>> print(cpu_kv_cache_problem(64 << 30, 0, available=8 << 30, total=10 << 30))  # doctest: +ELLIPSIS
        --vllm_kv_cache_memory asks for 64.00 GiB of KV cache, but NUMA node 0 ... lower it, e.g. --vllm_kv_cache_memory 4GiB.
    """
    if kv_bytes <= available:
        return None
    suggestion = max(1, int(available * 0.5) >> 20)
    return (f"--vllm_kv_cache_memory asks for {format_gib(kv_bytes)} of KV cache, but NUMA node {node} "
            f"(the memory vLLM's CPU worker uses) has {format_gib(available)} available of {format_gib(total)}: "
            f"lower it, e.g. --vllm_kv_cache_memory {_pretty(suggestion << 20)}.")


def gpu_memory_problem(utilization: float, free: int, total: int) -> str | None:
    """The start-up check on GPU: vLLM asks for ``utilization`` x the device's total memory and
    fails when less than that is free (colocated models, or other engines on the same device).

    Example:
        >>> gpu_memory_problem(0.5, free=60 << 30, total=80 << 30) is None
        True
        >>> print(gpu_memory_problem(0.9, free=50 << 30, total=80 << 30))  # doctest: +ELLIPSIS
        --vllm_gpu_memory_utilization 0.9 asks for 72.00 GiB of the GPU's 80.00 GiB, but 50.00 GiB are free ... lower it to 0.59 or less...
    """
    wanted = utilization * total
    if wanted <= free:
        return None
    fits = math.floor(free / total * 0.95 * 100) / 100
    return (f"--vllm_gpu_memory_utilization {utilization:g} asks for {format_gib(wanted)} of the GPU's "
            f"{format_gib(total)}, but {format_gib(free)} are free (the colocated models and other "
            f"processes hold the rest): lower it to {fits:g} or less, use --vllm_enable_sleep, or give the cache "
            f"in bytes with --vllm_kv_cache_memory (e.g. 4GiB).")


def _pretty(n: int) -> str:
    return f"{n >> 30}GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}MiB"
