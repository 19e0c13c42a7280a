"""Rewards computed elsewhere: an HTTP reward server, or a Python file that defines ``reward_func``.

Both follow OpenRLHF's ``--remote_rm_url`` convention:
- HTTP: POST ``{"query": [...], "prompts": [...], "labels": [...]}`` as JSON, answer
  ``{"rewards": [...]}`` (one number per query; other keys such as "scores" are ignored).
- File: ``reward_func(queries, prompts, labels)`` returning a list, a tensor or array, or a dict
  with a "rewards" entry.
``queries`` are prompt + response as decoded text, ``prompts`` and ``labels`` come from the data.

Example:
    >>> reward = FileReward("my_reward.py")  # doctest: +SKIP
    >>> reward(["1+1=2"], ["1+1="], ["2"])  # doctest: +SKIP
    [1.0]
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import time
import urllib.error
import urllib.request


class RewardError(RuntimeError):
    """A reward source answered something that is not one finite number per query."""


def to_reward_list(out, n: int, source: str) -> list[float]:
    """Normalise what a reward source returned to ``n`` finite floats, or raise `RewardError`.

    Example:
        >>> to_reward_list({"rewards": [1, 0.5]}, 2, "demo")
        [1.0, 0.5]
    """
    if isinstance(out, dict):
        if "rewards" not in out:
            raise RewardError(f"{source} returned a dict without a 'rewards' entry (keys: {sorted(out)[:10]})")
        out = out["rewards"]
    if hasattr(out, "tolist"):  # torch tensor, numpy array
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        raise RewardError(f"{source} returned {type(out).__name__}, expected a list of {n} numbers")
    if len(out) != n:
        raise RewardError(f"{source} returned {len(out)} rewards for {n} queries")
    rewards = []
    for i, r in enumerate(out):
        if isinstance(r, (list, tuple)) and len(r) == 1:  # a (n, 1) tensor's tolist()
            r = r[0]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise RewardError(f"{source} returned reward {i} = {r!r}; rewards must be finite numbers")
        rewards.append(float(r))
    return rewards


class HttpReward:
    """POST the batch to ``url`` and read ``{"rewards": [...]}``; retries connection failures.

    Example:
        >>> reward = HttpReward("http://127.0.0.1:5000/get_reward")  # doctest: +SKIP
        >>> reward(["1+1=2"], ["1+1="], ["2"])  # doctest: +SKIP
        [1.0]
    """

    def __init__(self, url: str, timeout: float = 120.0, retries: int = 3):
        self.url, self.timeout, self.retries = url, timeout, retries

    def __call__(self, queries: list[str], prompts: list[str], labels: list[str]) -> list[float]:
        body = json.dumps({"query": list(queries), "prompts": list(prompts), "labels": list(labels)}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as e:  # the server answered: retrying will not help
                detail = e.read()[:300].decode("utf-8", "replace")
                raise RewardError(f"reward server {self.url} answered HTTP {e.code}: {detail}") from e
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt == self.retries:
                    raise RewardError(f"reward server {self.url} unreachable after {self.retries + 1} tries: {e}") from e
                time.sleep(min(2.0**attempt, 10.0))
        try:
            out = json.loads(raw)
        except ValueError as e:
            raise RewardError(f"reward server {self.url} answered non-JSON: {raw[:200]!r}") from e
        return to_reward_list(out, len(queries), f"reward server {self.url}")


class FileReward:
    """Import ``reward_func`` from a ``.py`` file (once, lazily, so the object pickles to Ray workers).

    Example:
        >>> reward = FileReward("examples/length_reward.py")  # doctest: +SKIP
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"--remote_rm_url {path}: no such reward file")
        self._func = None

    def __getstate__(self):
        return {"path": self.path, "_func": None}

    def load(self):
        if self._func is None:
            name = "openrlhf_ext_user_reward_" + str(abs(hash(self.path)))
            spec = importlib.util.spec_from_file_location(name, self.path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            func = getattr(module, "reward_func", None)
            if not callable(func):
                raise RewardError(f"{self.path} defines no function reward_func(queries, prompts, labels)")
            self._func = func
        return self._func

    def __call__(self, queries: list[str], prompts: list[str], labels: list[str]) -> list[float]:
        out = self.load()(list(queries), list(prompts), list(labels))
        return to_reward_list(out, len(queries), f"reward_func of {self.path}")
