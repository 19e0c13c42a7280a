"""The trajectory saver core: per-token entropy, high-entropy marks, lossless token texts, files.

Stands alone (torch, numpy, a tokenizer): use it from any trainer. Reading and checking files is
``trajectory.format``; the ``openrlhf-traj`` tools (stats, report, convert) are ``trajectory.tools``.

Example:
    >>> from openrlhf_ext.trajectory import add_trajectory_args, TrajectorySaver   # doctest: +SKIP
    >>> saver = TrajectorySaver.from_args(args, tokenizer)                          # doctest: +SKIP
    >>> saver.save_step(global_step, experiences)                                   # doctest: +SKIP
"""
import importlib

# Public name -> module. Loaded on first use, so that `openrlhf-traj validate` and `stats` start
# without importing torch (seconds on a laptop).
_EXPORTS = {
    "ExperienceLayoutError": "layouts",
    "TrajectoryFormatError": "format.schema",
    "TrajectorySaver": "saver",
    "add_trajectory_args": "args",
    "build_record": "records",
    "high_entropy_mask": "marks",
    "load_trajectories": "format.reading",
    "token_entropy": "entropy",
    "token_texts": "texts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
