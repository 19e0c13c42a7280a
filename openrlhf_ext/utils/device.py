"""Which device this process computes on: the question every layer asks (Ray's resources, DeepSpeed's
backend, vLLM's options), answered in one place.

    >>> on_gpu() == torch.cuda.is_available()
    True
    >>> compute_device().type == ("cuda" if on_gpu() else "cpu")
    True
"""
from __future__ import annotations

import torch


def on_gpu() -> bool:
    """True when this process sees a CUDA GPU; everything else then runs on the CPU (gloo, CPU vLLM)."""
    return torch.cuda.is_available()


def compute_device() -> torch.device:
    """The device of a worker: its GPU (Ray gives each GPU actor its own as cuda:0), else the CPU."""
    return torch.device("cuda", 0) if on_gpu() else torch.device("cpu")
