"""`python train_colocate.py` with no model flags: the embedded model, the built-in prompts, the
math-verify reward; it ends by saying where the trajectories are and how to open them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")
pytest.importorskip("deepspeed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_command_on_the_embedded_model(tmp_path):
    save = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "train_colocate.py"), "--max_steps", "2", "--rollout_backend", "hf",
           "--colocate_all_models", "--save_path", str(save), "--save_trajectories", "--mark_high_entropy_tokens"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    traj = os.path.abspath(save / "trajectories")
    assert f"Trajectories are in {traj}" in text
    viewer = os.path.join(REPO, "viewer", "render_trajectories.html")
    assert f"open them: {viewer}" in text and os.path.isfile(viewer)
    assert f"openrlhf-traj stats {traj}" in text
    assert "step 2/2 | reward" in text  # the one-line step summary
    # the files pass the format's own validator, as a user would run it
    check = subprocess.run([sys.executable, "-m", "openrlhf_ext.trajectory", "validate", traj], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    from openrlhf_ext.trajectory import load_trajectories

    records = load_trajectories(traj)
    assert {r["global_step"] for r in records} == {1, 2}
    # the embedded arithmetic task, scored by math-verify: a record's reward says whether its answer is the sum
    for r in records:
        a, b = r["prompt_text"].rstrip("=").split("+")
        answer = "".join(t["text"] for t in r["pure_generated_tokens"] if t.get("id", 99) > 3).strip()
        if answer == str(int(a) + int(b)):
            assert r["info"]["reward"] == 1.0, r
        if r["info"]["reward"] == 1.0:
            assert answer.lstrip("0") == str(int(a) + int(b)).lstrip("0"), r
