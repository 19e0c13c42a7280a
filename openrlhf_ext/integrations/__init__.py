"""Drop-ins for the trainers people already use: each saves that trainer's rollouts with the
trajectory saver (per-token entropy, high-entropy marks, lossless texts) into the run folder our
trainer writes (FORMAT.md), so the viewer and ``openrlhf-traj`` work on it unchanged.

- ``openrlhf_ext.integrations.trl``: ``save_trajectories(trainer, **flags)`` on a ``trl.GRPOTrainer``.
- ``openrlhf_ext.integrations.verl``: ``RayPPOTrainer`` subclass and TaskRunner (verl >= 0.7).
- ``openrlhf_ext.integrations.openrlhf``: PPO actor for upstream OpenRLHF (0.8.3 - 0.11.x).

Submodules load on first use, so importing this package pulls in no trainer framework.
See docs/integrations.md.

Example:
    >>> from openrlhf_ext.integrations import trl as traj_trl               # doctest: +SKIP
    >>> saver = traj_trl.save_trajectories(trainer, mark_high_entropy_tokens=True)   # doctest: +SKIP
"""
import importlib

_SUBMODULES = ("common", "openrlhf", "trl", "verl")

__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
