"""Drop-ins for the trainers people already use: each writes the run folder our trainer writes
(FORMAT.md), so the viewer and ``openrlhf-traj`` work on it unchanged.

- ``openrlhf_ext.integrations.trl``: ``save_trajectories(trainer, **flags)`` on a ``trl.GRPOTrainer``.

Submodules load on first use, so importing this package pulls in no trainer framework.

Example:
    >>> from openrlhf_ext.integrations import trl as traj_trl               # doctest: +SKIP
    >>> saver = traj_trl.save_trajectories(trainer, mark_high_entropy_tokens=True)   # doctest: +SKIP
"""
import importlib

_SUBMODULES = ("trl",)

__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
