"""Where every Ray actor group is created: one placement group, bundles shared when colocated.

    >>> from openrlhf_ext.ray.workers import BaseWorker
    >>> start_ray(num_cpus=2)
    >>> group = ActorGroup(BaseWorker, num_workers=2, pg=create_placement_group(num_bundles=2), name="demo")
    >>> ray.get(group.call("ping"))   # the same call on every worker (PolicyWorker: "init_model", ...)
    [True, True]
    >>> ray.shutdown()

With `--colocate_all_models`, the actor, reference, critic, reward model and vLLM engines all sit
on the same bundles, each asking for a fraction of it (1/share of a GPU, or of a CPU: on CPU two
actors share a one-CPU bundle only with fractional num_cpus). Without it, every group gets
bundles of its own.
"""
from __future__ import annotations

import os

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from openrlhf_ext.utils.device import on_gpu


def start_ray(num_cpus: int | None = None) -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or start a local one without the dashboard."""
    if ray.is_initialized():
        return
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "OPENRLHF_EXT_DS_SHM",
              "OPENRLHF_EXT_CPU_THREADS"):
        if k in os.environ:
            env[k] = os.environ[k]
    # Workers import the very openrlhf_ext the controller runs (a source checkout may sit beside
    # an installed copy of the package).
    import openrlhf_ext

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(openrlhf_ext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
    if not on_gpu():
        env["DS_ACCELERATOR"] = "cpu"  # skips DeepSpeed's accelerator probe warning in every worker
    kwargs = dict(include_dashboard=False, log_to_driver=True, runtime_env={"env_vars": env},
                  logging_level="ERROR", configure_logging=True)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def bundle_resources() -> dict:
    return {"GPU": 1, "CPU": 1} if on_gpu() else {"CPU": 1}


def create_placement_group(num_bundles: int):
    """One bundle per device (a GPU, or a CPU slot on a machine without one), packed on few nodes."""
    pg = placement_group([bundle_resources() for _ in range(num_bundles)], strategy="PACK")
    ray.get(pg.ready())
    return pg


class ActorGroup:
    """`num_workers` Ray actors of one class, rank i on bundle i of `pg`, each with 1/share of it.

    Rank 0 is created first and picks the rendezvous address for DeepSpeed (MASTER_ADDR/PORT).
    """

    def __init__(self, worker_cls, num_workers: int, pg, share: int = 1, name: str = "",
                 num_threads: int | None = None, distributed: bool = True):
        self.name = name
        frac = 1.0 / share
        res = {"num_gpus": frac, "num_cpus": frac} if on_gpu() else {"num_cpus": frac}
        remote_cls = ray.remote(worker_cls)

        def make(rank, addr, port):
            return remote_cls.options(
                **res, name=None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank),
            ).remote(rank, num_workers, addr, port, num_threads)

        if distributed:
            self.workers = [make(0, None, None)]
            addr, port = ray.get(self.workers[0].get_master_addr_port.remote())
            ray.get(self.workers[0].set_dist_env.remote(addr, port))
            self.workers += [make(r, addr, port) for r in range(1, num_workers)]
        else:
            self.workers = [make(r, None, None) for r in range(num_workers)]

    def call(self, method: str, *args, **kwargs) -> list:
        """Same call on every worker; returns the object refs."""
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def call_sharded(self, method: str, shards: list, *args, **kwargs) -> list:
        """Worker i gets shards[i] as its first argument."""
        assert len(shards) == len(self.workers)
        return [getattr(w, method).remote(s, *args, **kwargs) for w, s in zip(self.workers, shards)]

    def call_round_robin(self, method: str, items: list, *args, **kwargs) -> list:
        """Item i goes to worker ``i % len(self)``; each worker gets its items as one list (its first
        argument). Returns the object refs; `in_item_order` puts the results back in item order."""
        return self.call_sharded(method, [items[w :: len(self)] for w in range(len(self))], *args, **kwargs)

    def __len__(self) -> int:
        return len(self.workers)


def in_item_order(outs: list[list]) -> list:
    """The results of `ActorGroup.call_round_robin` (``ray.get`` of its refs: one list per worker) in
    the order of the items: item i's result is ``outs[i % world][i // world]``.

    Example:
        >>> in_item_order([["a", "c", "e"], ["b", "d"]])
        ['a', 'b', 'c', 'd', 'e']
    """
    world = len(outs)
    return [outs[i % world][i // world] for i in range(sum(len(o) for o in outs))]

