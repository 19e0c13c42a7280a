"""Reward functions: ``reward_fn(queries, prompts, labels) -> list[float]``, picked from the flags.

Example:
    >>> from argparse import Namespace
    >>> reward_fn = build_reward_fn(Namespace(remote_rm_url=None))  # math-verify, exact answers
    >>> reward_fn(["12+7=19"], ["12+7="], ["19"])
    [1.0]
"""
from __future__ import annotations

from openrlhf_ext.rewards.math_verify_reward import MathVerifyReward, response_text
from openrlhf_ext.rewards.remote import FileReward, HttpReward, RewardError, to_reward_list

__all__ = ["build_reward_fn", "MathVerifyReward", "HttpReward", "FileReward", "RewardError", "response_text", "to_reward_list"]


def build_reward_fn(args, tokenizer=None):
    """The reward function the flags ask for.

    - ``--remote_rm_url http(s)://...``: `HttpReward` (OpenRLHF's JSON convention).
    - ``--remote_rm_url path/to/file.py``: `FileReward`, the file's ``reward_func``.
    - neither: `MathVerifyReward`, math-verify on the response's final answer against the label
      (``tokenizer``'s special tokens, if given, are stripped from responses first).

    The returned object is picklable (it can be sent to Ray workers). A learned reward model
    (``--reward_pretrain`` without ``--remote_rm_url``) is the trainer's business, not this one's.

    Example:
        >>> from argparse import Namespace
        >>> build_reward_fn(Namespace(remote_rm_url="http://127.0.0.1:5000/get_reward")).url
        'http://127.0.0.1:5000/get_reward'
    """
    url = getattr(args, "remote_rm_url", None)
    if url:
        if url.startswith(("http://", "https://")):
            return HttpReward(url)
        if url.endswith(".py"):
            return FileReward(url)
        raise ValueError(f"--remote_rm_url {url!r} is neither an http(s) URL nor a .py file defining reward_func")
    special = list(getattr(tokenizer, "all_special_tokens", []) or []) if tokenizer is not None else []
    return MathVerifyReward(special_tokens=special)
