"""Probe prompts: a few fixed prompts answered at every probe step under the current weights, so a
reader can follow one prompt's answers (and their forks) through training. Never trained on.

    >>> rows = [{"prompt": f"{i}+1=", "label": str(i + 1)} for i in range(6)] + [{"prompt": "0+1=", "label": "1"}]
    >>> train, probes = split_probe_prompts(rows, 2, seed=0)
    >>> [p["prompt"] for p in probes], len(train)      # "0+1=" twice in the set: both copies held out
    (['3+1=', '0+1='], 4)
    >>> [s for s in range(1, 13) if is_probe_step(s, every=5, total_steps=12)]   # first, every 5, last
    [1, 5, 10, 12]

The probe stage itself (generate n responses per probe prompt with the rollout engine, score them,
one actor forward) is `stages.probe`; the saver writes them to `probes_step_<N>.json`.
"""
from __future__ import annotations

import argparse
import random


def split_probe_prompts(prompts: list[dict], n: int, seed: int,
                        probe_rows: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
    """(training prompts, probe prompts). The probes are ``probe_rows`` when given (a probe file),
    else ``n`` prompts drawn from ``prompts`` with ``random.Random(seed)``, in the set's order. Every
    prompt of the set whose text is a probe's is left out of training, so no probe is trained on."""
    if probe_rows is None:
        if n <= 0:
            return prompts, []
        if n >= len(prompts):
            raise ValueError(f"--trajectory_probe_prompts {n} would hold out all {len(prompts)} prompts of the set: "
                             "lower it, or give the probes in --trajectory_probe_data")
        probe_rows = [prompts[i] for i in sorted(random.Random(seed).sample(range(len(prompts)), n))]
    texts = {p["prompt"] for p in probe_rows}
    return [p for p in prompts if p["prompt"] not in texts], list(probe_rows)


def load_probe_prompts(args, tokenizer, prompts: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training prompts, probe prompts) of the flags: ``--trajectory_probe_data`` (read as
    ``--prompt_data`` is, same keys and template; its first ``--trajectory_probe_prompts`` rows when
    that is set) or ``--trajectory_probe_prompts`` N held out of ``prompts``."""
    from openrlhf_ext.datasets.prompts import load_prompts

    n = getattr(args, "trajectory_probe_prompts", 0) or 0
    path = getattr(args, "trajectory_probe_data", None)
    rows = None
    if path:
        rows = load_prompts(argparse.Namespace(**{**vars(args), "prompt_data": path, "max_samples": n or None}), tokenizer)
    return split_probe_prompts(prompts, n, getattr(args, "seed", 42), rows)


def is_probe_step(step: int, every: int, total_steps: int) -> bool:
    """Probe steps: the first, every ``every``-th, and the last."""
    return step == 1 or step % max(every, 1) == 0 or step == total_steps
