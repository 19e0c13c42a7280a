"""Checkpoints of a run (the trajectory folder is made consistent with them by
`TrajectorySaver.forget_steps_after`).

DeepSpeed writes `<ckpt_path>/_actor/global_step<N>/` (+ `_critic/`) and a `latest` file naming the
newest tag; the controller's own state (the global step) rides along as DeepSpeed client state.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as ckpt:
    ...     (Path(ckpt) / "_actor" / tag_for(12)).mkdir(parents=True)
    ...     _ = (Path(ckpt) / "_actor" / "latest").write_text(tag_for(12))   # DeepSpeed writes this file
    ...     latest_checkpoint_step(ckpt)
    12
"""
from __future__ import annotations

import os
import re
import shutil

TAG_RE = re.compile(r"^global_step(\d+)$")


def tag_for(step: int) -> str:
    return f"global_step{step}"


def latest_checkpoint_step(ckpt_path: str) -> int | None:
    """The step of the newest complete actor checkpoint, or None."""
    latest = os.path.join(ckpt_path, "_actor", "latest")
    if not os.path.isfile(latest):
        return None
    with open(latest, encoding="utf-8") as f:
        m = TAG_RE.match(f.read().strip())
    return int(m.group(1)) if m else None


def prune_old_checkpoints(ckpt_path: str, keep: int) -> None:
    """Keep the newest `keep` tags of every model folder."""
    if keep <= 0:
        return
    for sub in ("_actor", "_critic"):
        d = os.path.join(ckpt_path, sub)
        if not os.path.isdir(d):
            continue
        tags = sorted((int(m.group(1)), name) for name in os.listdir(d) if (m := TAG_RE.match(name)))
        for _, name in tags[:-keep]:
            shutil.rmtree(os.path.join(d, name), ignore_errors=True)
