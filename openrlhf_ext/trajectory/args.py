"""The trajectory flags. They change what is saved, never what is trained."""
from __future__ import annotations

import argparse

from .alternatives import ALTERNATIVES_FOR
from .marks import SCOPES, check_ratio
from .sampling import SAMPLING_MODES


def ratio_type(text: str) -> float:
    """The argparse ``type`` of every ratio flag (``marks.check_ratio``), so that a bad value is
    an argparse error that names the flag and says what a ratio is.

    Example:
        >>> p = argparse.ArgumentParser(prog="train")
        >>> _ = p.add_argument("--ratio", type=ratio_type)
        >>> p.parse_args(["--ratio", "0.1"]).ratio
        0.1
    """
    try:
        return check_ratio(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_trajectory_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the trajectory saver's flags to ``parser`` (returns it).

    Example:
        >>> import argparse
        >>> p = add_trajectory_args(argparse.ArgumentParser())
        >>> a = p.parse_args(["--save_trajectories", "--mark_high_entropy_tokens"])
        >>> a.num_trajectories_to_save, a.high_entropy_token_ratio, a.high_entropy_scope
        (10, 0.2, 'step')
        >>> a.save_top_k_alternatives, a.alternatives_for
        (5, 'high')
    """
    g = parser.add_argument_group("trajectories", "save rollouts with per-token entropy (see viewer/render_trajectories.html)")
    g.add_argument("--save_trajectories", action="store_true", help="write trajectories_step_N.json files")
    g.add_argument("--num_trajectories_to_save", type=_count(0), default=10, help="responses saved per step (default 10)")
    g.add_argument("--mark_high_entropy_tokens", action="store_true", help="mark the step's top-ratio highest-entropy tokens")
    g.add_argument("--high_entropy_token_ratio", type=ratio_type, default=0.2, help="share of tokens marked, in (0, 1] (default 0.2)")
    g.add_argument("--high_entropy_scope", choices=SCOPES, default="step",
                   help="rank tokens over the whole step (default) or inside each response")
    g.add_argument("--trajectory_save_steps", type=_count(1), default=1, help="save every N global steps (default 1)")
    g.add_argument("--trajectory_dir", type=str, default=None, help="output folder (default <save_path>/trajectories)")
    g.add_argument("--trajectory_sampling", choices=SAMPLING_MODES, default="groups",
                   help="which responses to keep: whole prompt groups (default), whole groups with the most "
                        "high-entropy tokens first (forks), random, first, or stratified by reward")
    g.add_argument("--save_entropy_trace", action="store_true",
                   help="also write steps/step_NNNNNN.npz with the entropy of every response of the step")
    g.add_argument("--save_top_k_alternatives", type=_count(0), default=5, metavar="K",
                   help="write the K most probable tokens of the sampling distribution as a token's "
                        "alternatives (0: none; default 5); taken from the entropy's forward pass")
    g.add_argument("--alternatives_for", choices=ALTERNATIVES_FOR, default="high",
                   help="which saved tokens get alternatives: the high-entropy ones (default; with "
                        "--mark_high_entropy_tokens) or all")
    g.add_argument("--trajectory_strict", action="store_true", help="stop training when a trajectory file cannot be written")
    return parser
