"""Checkpoints of a run, and keeping the trajectory folder consistent with them on resume.

DeepSpeed writes `<ckpt_path>/_actor/global_step<N>/` (+ `_critic/`) and a `latest` file naming the
newest tag; the controller's own state (the global step) rides along as DeepSpeed client state.

    >>> latest_checkpoint_step("ckpt/checkpoints")
    12
"""
from __future__ import annotations

import json
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


STEP_FILE_RE = re.compile(r"^trajectories_step_(\d+)\.json$")
TRACE_FILE_RE = re.compile(r"^step_(\d+)\.npz$")


def prune_trajectories_after(traj_dir: str, step: int) -> list[str]:
    """Forget the trajectories of steps after `step` (a resumed run redoes those steps).

    A run that crashed after step 12's checkpoint but while saving step 14 has step files 13-14 and
    their manifest lines; the resumed run starts again at 13. Dropping them first keeps the folder
    free of duplicates (two manifest lines for one step) and of gaps. Returns the removed files.
    """
    from openrlhf_ext.trajectory.files import atomic_write_text

    removed = []
    if not os.path.isdir(traj_dir):
        return removed
    for name in os.listdir(traj_dir):
        m = STEP_FILE_RE.match(name)
        if m and int(m.group(1)) > step:
            os.remove(os.path.join(traj_dir, name))
            removed.append(name)
    steps_dir = os.path.join(traj_dir, "steps")
    if os.path.isdir(steps_dir):
        for name in os.listdir(steps_dir):
            m = TRACE_FILE_RE.match(name)
            if m and int(m.group(1)) > step:
                os.remove(os.path.join(steps_dir, name))
                removed.append(os.path.join("steps", name))
    manifest = os.path.join(traj_dir, "manifest.jsonl")
    if os.path.isfile(manifest):
        kept = []
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    if int(json.loads(line).get("global_step", -1)) > step:
                        continue
                except (ValueError, AttributeError, TypeError):
                    pass  # a line we do not understand is not ours to drop
                kept.append(line if line.endswith("\n") else line + "\n")
        atomic_write_text(manifest, "".join(kept))
    return removed
