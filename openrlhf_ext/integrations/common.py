"""What the drop-ins share: the saver's flags from a mapping (a Hydra config node, keyword
arguments), checked by the very parser that checks ``--save_trajectories ...`` on the command line
so that a typo or a ratio of 2 is refused the same way everywhere; and the plain class behind a
``@ray.remote`` class, to subclass a trainer's Ray actor."""
from __future__ import annotations

import argparse
from collections.abc import Mapping

from openrlhf_ext.trajectory import add_trajectory_args


class UnknownFlagError(TypeError, ValueError):
    """A flag name the saver does not have: a TypeError for keyword arguments (TRL's
    ``save_trajectories(**flags)``), a ValueError for config keys (verl, OpenRLHF)."""


def saver_args(flags: Mapping, where: str = "trajectory saver", exclude: tuple = (), **context) -> argparse.Namespace:
    """A namespace for ``TrajectorySaver.from_args`` from ``flags`` named as our command-line flags.

    ``context`` adds what the trainer knows that is no saver flag (``save_path``, ``seed``,
    ``pretrain``); a flag given in ``flags`` wins. Unknown names (and those in ``exclude``) raise
    ``UnknownFlagError``, bad values ValueError, each naming ``where``.

    Example:
        >>> a = saver_args({"save_trajectories": True, "high_entropy_token_ratio": 0.1}, save_path="ckpt")
        >>> a.save_trajectories, a.high_entropy_token_ratio, a.num_trajectories_to_save, a.save_path
        (True, 0.1, 10, 'ckpt')
        >>> saver_args({"high_entropy_token_ratio": 2})
        Traceback (most recent call last):
        ...
        ValueError: trajectory saver: argument --high_entropy_token_ratio: ratio must be in (0, 1] (0.2 is the top 20% of tokens), got 2
    """
    parser = add_trajectory_args(argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False))
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv = []
    for name, value in flags.items():
        action = actions.get(name)
        if action is None or name == "help" or name in exclude:
            known = ", ".join(sorted(k for k in actions if k != "help" and k not in exclude))
            raise UnknownFlagError(f"{where}: unknown key {name!r}; valid: {known}")
        if action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be true or false, got {value!r}")
            argv += [action.option_strings[0]] if value else []
        elif value is not None:
            argv += [action.option_strings[0], str(value)]
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(f"{where}: {e}") from None
    for name, value in context.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def ray_actor_class(actor_cls):
    """The plain class behind a ``@ray.remote`` class (or the class itself)."""
    meta = getattr(actor_cls, "__ray_metadata__", None)
    return meta.modified_class.__ray_actor_class__ if meta is not None else actor_cls
