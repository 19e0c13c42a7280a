"""Which responses of a step get saved (``--trajectory_sampling``). Seeded, so reproducible."""
from __future__ import annotations

import numpy as np

SAMPLING_MODES = ("groups", "forks", "random", "first", "stratified")


def choose_responses(groups, rewards, num: int, mode: str = "groups", seed: int = 0, forks=None) -> list[int]:
    """Indices (ascending) of at most ``num`` responses out of ``len(groups)``.

    - ``groups``: whole prompt groups in a seeded random order, so the right and wrong answers to
      one prompt sit side by side; groups are added while they fit in ``num`` (a first group
      larger than ``num`` is cut to fit), so a step may save fewer than ``num``.
    - ``random``: a seeded random sample.
    - ``first``: the first ``num``.
    - ``stratified``: spread evenly over the responses sorted by reward (lowest to highest).
    - ``forks``: whole prompt groups as ``groups`` does, the groups with the most high-entropy
      tokens first (``forks``: each response's count of marked tokens; ties in seeded order), so
      a small run's files show where the policy forked.

    Example:
        >>> choose_responses([0, 0, 1, 1, 2, 2], [0, 1, 0, 0, 1, 1], 4, "groups", seed=0)
        [0, 1, 4, 5]
        >>> choose_responses([0, 1, 2, 3, 4], [5, 1, 4, 2, 3], 3, "stratified")
        [0, 1, 4]
        >>> choose_responses([0, 0, 1, 1, 2, 2], None, 2, "forks", forks=[0, 1, 3, 0, 0, 0])
        [2, 3]
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"trajectory sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    n = len(groups)
    num = min(max(num, 0), n)
    if num == 0:
        return []
    rng = np.random.default_rng(seed)
    if mode == "first" or num == n:
        return list(range(num))
    if mode == "random":
        return sorted(rng.choice(n, size=num, replace=False).tolist())
    if mode == "stratified":
        r = np.nan_to_num(np.asarray(rewards, dtype=np.float64), nan=-np.inf)
        order = np.argsort(r, kind="stable")
        picks = np.unique(np.round(np.linspace(0, n - 1, num)).astype(int))
        return sorted(order[picks].tolist())
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    member_lists = list(members.values())
    order = rng.permutation(len(member_lists))
    if mode == "forks":
        if forks is None:
            raise ValueError("trajectory sampling 'forks' needs each response's count of high-entropy tokens")
        marked = [sum(forks[i] for i in member_lists[k]) for k in order]
        order = order[np.argsort(-np.asarray(marked, dtype=np.float64), kind="stable")]
    chosen: list[int] = []
    for k in order:
        group = member_lists[k]
        if len(chosen) + len(group) <= num:
            chosen.extend(group)
        elif not chosen:
            chosen.extend(group[:num])
            break
    return sorted(chosen)
