"""`python train_colocate.py` with no model flags: the embedded model, the built-in prompts, the
math-verify reward; it writes worked solutions whose forks are their decisions, and ends by saying
where the trajectories are and how to open them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("ray")
pytest.importorskip("deepspeed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from openrlhf_ext.datasets.column_addition import operands  # noqa: E402
from openrlhf_ext.models.embedded import embedded_model_path  # noqa: E402
from scripts.fork_roles import step_role_shares  # noqa: E402


def test_main_command_on_the_embedded_model(tmp_path):
    save = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "train_colocate.py"), "--max_steps", "2", "--rollout_backend", "hf",
           "--colocate_all_models", "--save_path", str(save), "--save_trajectories", "--mark_high_entropy_tokens",
           "--save_entropy_trace"]
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
    from transformers import AutoTokenizer

    from openrlhf_ext.trajectory import load_trajectories

    records = load_trajectories(traj)
    assert {r["global_step"] for r in records} == {1, 2}
    # the built-in addition task, scored by math-verify: a record's reward says whether its boxed answer is the sum
    boxed_answers = 0
    for r in records:
        a, b = operands(r["prompt_text"])
        text = "".join(t["text"] for t in r["pure_generated_tokens"] if t.get("id", 99) > 3)
        boxed = re.fullmatch(r"[0-9+=\n]*\\boxed\{(\d+)\}", text)
        if boxed:
            boxed_answers += 1
            assert r["info"]["reward"] == float(int(boxed.group(1)) == a + b), r
    assert boxed_answers >= 0.9 * len(records)
    # worked solutions, and the step's high-entropy tokens (over all its 512 responses) on their decisions
    assert sum(r["info"]["response_length"] for r in records) / len(records) >= 24
    tok = AutoTokenizer.from_pretrained(embedded_model_path())
    for step in (1, 2):
        shares = step_role_shares(os.path.join(traj, "steps", f"step_{step:06d}.npz"), tok, ratio=0.2)
        assert shares["decision"] >= 0.8 and shares["format"] + shares["end"] <= 0.05, shares
