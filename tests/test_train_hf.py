"""End to end on the CPU: train_colocate.py through Ray + DeepSpeed (ZeRO-2, gloo) with Hugging Face
generate, writing trajectory files; then a resume from its checkpoint.

One 3-step run (checkpoint at step 2) is shared by the tests of this module; the resume test
continues a copy of it. About a minute on 2 idle cores.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

pytest.importorskip("ray")
pytest.importorskip("deepspeed")

from openrlhf_ext.trajectory import load_trajectories  # noqa: E402
from tests.train_helpers import build_tiny_model, reward_share_of_digits, short_run_flags, write_reward_file  # noqa: E402


def _run(argv):
    import train_colocate

    return train_colocate.main(argv)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_hf")
    model = build_tiny_model(str(root / "model"))
    reward_py = write_reward_file(str(root))
    save_path = str(root / "run")
    trainer = _run(short_run_flags(model, save_path, reward_py, max_steps=3, save_steps=2))
    return dict(root=root, model=model, reward_py=reward_py, save_path=save_path, trainer=trainer,
                traj=os.path.join(save_path, "trajectories"))


def _by_step(records):
    out = {}
    for r in records:
        out.setdefault(r["global_step"], []).append(r)
    return out


def test_three_steps_write_valid_trajectories(run):
    trainer = run["trainer"]
    assert [m["global_step"] for m in trainer.history] == [1, 2, 3]
    for m in trainer.history:
        for key in ("reward", "entropy/mean", "entropy/p80", "entropy/threshold", "entropy/share_above", "kl",
                    "policy_loss", "time/generate", "time/update", "time/save"):
            assert key in m and math.isfinite(m[key]), key
    records = load_trajectories(run["traj"])  # raises on any format error
    steps = _by_step(records)
    assert sorted(steps) == [1, 2, 3]
    assert all(len(v) == 16 for v in steps.values())  # every response of a step (4 prompts x 4)
    # the final HF model folder loads back
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run["save_path"])
    assert os.path.isfile(os.path.join(run["save_path"], "checkpoints", "_actor", "latest"))


def test_rewards_advantages_returns_agree(run):
    steps = _by_step(load_trajectories(run["traj"]))
    # Rewards: recomputed from the saved text with the same reward file.
    for recs in steps.values():
        for r in recs:
            # the reward saw the decoded response without special tokens (ids 0-3: pad, bos, eos, unk)
            text = "".join(t["text"] for t in r["pure_generated_tokens"] if t["id"] >= 4)
            assert r["info"]["reward"] == pytest.approx(reward_share_of_digits(text), abs=1e-6)
            assert r["info"]["response_length"] == len(r["pure_generated_tokens"])
    # Advantages (group_norm, KL as a loss so not in the reward): each response's advantage is its
    # reward normalised within its prompt group, the same on every token, and the return equals it.
    for recs in steps.values():
        groups = {}
        for r in recs:
            groups.setdefault(r["group_index"], []).append(r)
        assert len(groups) == 4 and all(len(g) == 4 for g in groups.values())
        for g in groups.values():
            rew = torch.tensor([r["info"]["reward"] for r in g], dtype=torch.float64)
            expect = (rew - rew.mean()) / (rew.std() + 1e-9)
            got = torch.tensor([r["advantages"] for r in g], dtype=torch.float64)
            assert torch.allclose(got, expect, atol=1e-4), (got, expect)
            for r in g:
                assert r["return"] == pytest.approx(r["advantages"], abs=1e-5)
    # The newest step's file holds exactly what the experiences handed to the saver held.
    exps = run["trainer"].last_experiences
    last = {(r["experience_index"], r["sample_in_exp"]): r for r in steps[3]}
    for ei, e in enumerate(exps):
        for i in range(len(e)):
            r = last[(ei, i)]
            m = e.action_mask[i]
            assert r["info"]["reward"] == pytest.approx(float(e.info["reward"][i]), abs=1e-6)
            assert r["advantages"] == pytest.approx(float(e.advantages[i][m].mean()), abs=1e-5)
            assert r["return"] == pytest.approx(float(e.returns[i][m].mean()), abs=1e-5)
            assert [t["id"] for t in r["pure_generated_tokens"]] == e.sequences[i, -m.shape[0]:][m].tolist()
            ent = [t["entropy_score"] for t in r["pure_generated_tokens"]]
            assert ent == pytest.approx(e.action_entropy[i][m].tolist(), abs=1e-5)


def test_entropy_equals_independent_recomputation(run):
    """Step 1 was sampled from the initial weights: recompute its entropies with plain transformers,
    one unpadded sequence at a time, at the sampling temperature (0.7)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run["model"]).eval()
    recs = _by_step(load_trajectories(run["traj"]))[1]
    for r in recs[:6]:
        ids = [t["id"] for t in r["generated_tokens"]]
        n_prompt = sum(1 for t in r["generated_tokens"] if t.get("prompt"))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double() / 0.7  # (S, V)
        p = torch.softmax(logits, -1)
        ent = -(p * torch.log(p)).sum(-1)  # (S,) entropy of the distribution after each position
        expect = ent[n_prompt - 1 : len(ids) - 1]  # the positions that produced the response tokens
        got = torch.tensor([t["entropy_score"] for t in r["pure_generated_tokens"]], dtype=torch.float64)
        assert torch.allclose(got, expect, atol=2e-4), (got, expect)


def test_resume_continues_without_duplicates_or_gaps(run, tmp_path):
    # A copy of the run: checkpoint at step 2, trajectories of steps 1-3 (step 3 is redone).
    save_path = str(tmp_path / "run")
    shutil.copytree(run["save_path"], save_path)
    before = json.load(open(os.path.join(save_path, "trajectories", "trajectories_step_1.json")))
    trainer = _run(short_run_flags(run["model"], save_path, run["reward_py"], max_steps=4, save_steps=2)
                   + ["--load_checkpoint"])
    assert [m["global_step"] for m in trainer.history] == [3, 4]
    traj = os.path.join(save_path, "trajectories")
    steps = _by_step(load_trajectories(traj))
    assert sorted(steps) == [1, 2, 3, 4] and all(len(v) == 16 for v in steps.values())
    manifest = [json.loads(line) for line in open(os.path.join(traj, "manifest.jsonl"))]
    assert [m["global_step"] for m in manifest] == [1, 2, 3, 4]
    # steps before the checkpoint are untouched
    assert json.load(open(os.path.join(traj, "trajectories_step_1.json"))) == before
    # the resumed run trained from the step-2 weights: it saved a step-4 checkpoint on top
    latest = open(os.path.join(save_path, "checkpoints", "_actor", "latest")).read().strip()
    assert latest == "global_step4"
