"""DeepSpeed inside a Ray worker: the process-group environment, the config, the engine, ZeRO-3 gathers.

    >>> setup_dist_env(rank=0, world_size=1, master_addr="127.0.0.1", master_port=free_port())
    >>> init_distributed()   # gloo on a CPU, nccl on a GPU
    >>> engine = build_engine(torch.nn.Linear(4, 1), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0, zero_stage=2,
    ...                       micro_batch=8, grad_accum=2, world_size=1, bf16=False, max_norm=1.0)
    >>> engine.train_batch_size(), engine.zero_optimization_stage()
    (16, 2)
    >>> with full_weights(engine.module, zero_stage=2):   # ZeRO-3 would gather the shards here
    ...     engine.module.weight.shape
    torch.Size([1, 4])
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch

from openrlhf_ext.utils.device import on_gpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def setup_dist_env(rank: int, world_size: int, master_addr: str, master_port: int, local_rank: int | None = None):
    """DeepSpeed reads the rank layout from the environment (`env://`); Ray sets none of it."""
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(0 if local_rank is None else local_rank),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
    })
    if not on_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def skip_cpu_shm_comm_op():
    """Keep DeepSpeed from compiling its shared-memory all-reduce op on CPU.

    On a fresh CPU machine `deepspeed.init_distributed` builds the `deepspeed_shm_comm` C++ op with
    ninja (90-120 s of a 2-core machine) before anything trains. The op is an optional speed-up of
    intra-node all-reduce; without it DeepSpeed uses plain torch.distributed (gloo), which is what a
    single-node CPU run wants anyway. DeepSpeed has no switch for it at run time (DS_BUILD_SHM_COMM
    is for pre-building wheels), so we return "not available" from its builder hook. Set
    OPENRLHF_EXT_DS_SHM=1 to keep the op.
    """
    if on_gpu() or os.environ.get("OPENRLHF_EXT_DS_SHM") == "1":
        return
    import importlib

    # importlib, not `import deepspeed.comm.torch as m`: that form would bind the `torch` name that
    # deepspeed.comm re-exports (the torch package itself).
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def init_distributed():
    import deepspeed

    skip_cpu_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu() else "gloo")


def ds_config(zero_stage: int, micro_batch: int, grad_accum: int, world_size: int, bf16: bool,
              max_norm: float) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": max_norm,
        "zero_optimization": {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,  # our own step log replaces DeepSpeed's
        "wall_clock_breakdown": False,
    }


def build_engine(model: torch.nn.Module, lr: float, betas, weight_decay: float, zero_stage: int,
                 micro_batch: int, grad_accum: int, world_size: int, bf16: bool, max_norm: float):
    """A DeepSpeed engine around `model` with torch's AdamW.

    torch's optimizer rather than DeepSpeed's FusedAdam/CPUAdam: those are C++/CUDA ops that
    DeepSpeed compiles on first use, which on CPU costs minutes and gains nothing for small models.
    """
    import deepspeed

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, betas=tuple(betas), weight_decay=weight_decay
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer,
        config=ds_config(zero_stage, micro_batch, grad_accum, world_size, bf16, max_norm),
    )
    return engine


@contextlib.contextmanager
def full_weights(model: torch.nn.Module, zero_stage: int):
    """Inside the block every parameter of ``model`` is whole, also under ZeRO-3, where each rank holds
    a shard: there the parameters are gathered on entry (every rank must enter) and freed on exit."""
    if zero_stage != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield
