"""The trajectory saver core: per-token entropy, high-entropy marks, lossless token texts, files.

Stands alone (torch, numpy, a tokenizer, jinja2): use it from any trainer.

Example:
    >>> from openrlhf_ext.trajectory import add_trajectory_args, TrajectorySaver   # doctest: +SKIP
    >>> saver = TrajectorySaver.from_args(args, tokenizer)                          # doctest: +SKIP
    >>> saver.save_step(global_step, experiences)                                   # doctest: +SKIP
"""
from .args import add_trajectory_args
from .entropy import token_entropy
from .files import load_trajectories
from .marks import high_entropy_mask
from .records import build_record
from .saver import TrajectorySaver
from .schema import TrajectoryFormatError
from .texts import token_texts

__all__ = [
    "TrajectoryFormatError",
    "TrajectorySaver",
    "add_trajectory_args",
    "build_record",
    "high_entropy_mask",
    "load_trajectories",
    "token_entropy",
    "token_texts",
]
