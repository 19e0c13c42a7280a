#!/usr/bin/env python
"""Takes docs/viewer.png: the main job's own trajectories in the viewer, a prompt group side by side
and the tooltip of one of its forks.

    python scripts/viewer_screenshot.py                       # runs the main job (~2 min on 2 cores), then shoots
    python scripts/viewer_screenshot.py --run ckpt/openrlhf-ext/trajectories --step 30 --out docs/viewer.png

Without --run it runs the README's main command (`train_colocate.py --colocate_all_models
--save_trajectories --mark_high_entropy_tokens`, embedded defaults) into a temporary folder. The
page is viewer/render_trajectories.html in headless Chromium (Debian's `chromium`, driven by
Playwright), fed the run's step files through its file input as a user would pick them. The
shown group is the step's saved group with the most mixed rewards (right and wrong solutions of
one problem side by side); the tooltip is that of its first marked decision (a sum digit or carry).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def run_main_job(folder: str) -> str:
    """The README's main command into ``folder``; returns its trajectories/ folder."""
    cmd = [sys.executable, os.path.join(REPO, "train_colocate.py"), "--colocate_all_models", "--save_trajectories",
           "--mark_high_entropy_tokens", "--save_path", folder]
    print("running:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=folder)
    return os.path.join(folder, "trajectories")


def pick(records: list[dict]) -> tuple[int, int]:
    """(index in the step file of the trajectory to select, index of the token to hover in it).

    The group whose rewards are most mixed (closest to half right); in it, a wrong solution if
    there is one, and the token where it first left the right solution, if that token is marked
    (the fork that cost it the reward); else the response's first marked decision.
    """
    from openrlhf_ext.datasets.column_addition import operands, token_roles, worked_solution

    groups: dict = {}
    for i, r in enumerate(records):
        groups.setdefault(r.get("group_index"), []).append(i)
    mean = {g: sum(records[i]["info"]["reward"] for i in idx) / len(idx) for g, idx in groups.items()}
    best = min(groups, key=lambda g: (abs(mean[g] - 0.5), str(g)))
    members = sorted(groups[best], key=lambda i: records[i]["info"]["reward"])  # wrong ones first
    for i in members:
        toks = records[i]["pure_generated_tokens"]
        text = "".join(t["text"] if t["id"] > 3 else "\x00" for t in toks)
        roles = token_roles(text)
        hot = [j for j, (t, role) in enumerate(zip(toks, roles)) if t.get("high_entropy") and role == "decision"]
        right = worked_solution(*operands(records[i]["prompt_text"]))
        fork = next((j for j, (c, d) in enumerate(zip(text, right)) if c != d), None)
        if fork is not None and toks[fork].get("high_entropy"):
            return i, fork
        if hot:
            return i, hot[0]
    return members[0], 0


def shoot(traj_dir: str, step: int | None, out: str, width: int = 1440, height: int = 960) -> str:
    from playwright.sync_api import sync_playwright

    from openrlhf_ext.trajectory import load_trajectories
    from openrlhf_ext.trajectory.files import atomic_write_bytes, list_step_files

    steps = dict(list_step_files(traj_dir))  # {step: path}, by step number
    if not steps:
        raise SystemExit(f"no trajectories_step_*.json in {traj_dir}")
    files = [str(path) for path in steps.values()]
    step = max(steps) if step is None else step
    records = load_trajectories(steps[step])
    traj, tok = pick(records)
    viewer = os.path.join(REPO, "viewer", "render_trajectories.html")
    exe = shutil.which("chromium")
    if not exe:
        raise SystemExit("Debian's chromium is not on PATH (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1).new_page()
        page.goto(f"file://{viewer}#step={step}&traj={traj}")
        page.set_input_files("#file-input", files)
        page.wait_for_selector(".pane .tok")
        page.check("[data-toggle=compare]")
        page.uncheck("[data-toggle=meta]")  # eight panes side by side: room for the solutions themselves
        pane = page.locator(".pane").filter(has_text="· selected")
        pane.locator(f".resp-block .tok[data-i='{tok}']").hover()
        page.wait_for_selector("#tooltip.on")
        page.wait_for_timeout(300)
        atomic_write_bytes(out, page.screenshot())  # a reader never sees half a picture
        browser.close()
    print(f"{out}: step {step}, trajectory {traj} (group {records[traj].get('group_index')}), token {tok}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a trajectories/ folder to show (default: run the main job first)")
    p.add_argument("--step", type=int, default=None, help="the step to show (default: the last saved)")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "viewer.png"))
    a = p.parse_args(argv)
    if a.run:
        shoot(a.run, a.step, a.out)
        return
    with tempfile.TemporaryDirectory(prefix="viewer_screenshot_") as folder:
        shoot(run_main_job(folder), a.step, a.out)


if __name__ == "__main__":
    main()
