"""End to end on the CPU: train_colocate.py through Ray + DeepSpeed (ZeRO-2, gloo) with Hugging Face
generate, writing trajectory files (format v2: alternatives, rollout log-probs, prompt ids, probe
files); then a resume from its checkpoint.

One 3-step run (checkpoint at step 2; 2 probe prompts, probed at the first and the last step) is
shared by the tests of this module; the resume test continues a copy of it. About a minute and a
half on 2 idle cores. Step 1 was sampled from the initial weights, so its values are recomputed
here with plain transformers.
"""
from __future__ import annotations

import hashlib
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


# 2 probe prompts held out, 3 responses each, at the first step, every 5th and the last: steps 1 and 3.
PROBE_FLAGS = dict(trajectory_probe_prompts=2, trajectory_probe_samples=3, trajectory_probe_steps=5)


def _run(argv):
    import train_colocate

    return train_colocate.main(argv)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_hf")
    model = build_tiny_model(str(root / "model"))
    reward_py = write_reward_file(str(root))
    save_path = str(root / "run")
    trainer = _run(short_run_flags(model, save_path, reward_py, max_steps=3, save_steps=2, **PROBE_FLAGS))
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
    trainer = _run(short_run_flags(run["model"], save_path, run["reward_py"], max_steps=4, save_steps=2,
                                   **PROBE_FLAGS) + ["--load_checkpoint"])
    assert [m["global_step"] for m in trainer.history] == [3, 4]
    traj = os.path.join(save_path, "trajectories")
    steps = _by_step(load_trajectories(traj))
    assert sorted(steps) == [1, 2, 3, 4] and all(len(v) == 16 for v in steps.values())
    manifest = [json.loads(line) for line in open(os.path.join(traj, "manifest.jsonl"))]
    assert [m["global_step"] for m in manifest] == [1, 2, 3, 4]
    # steps before the checkpoint are untouched; step 3's probes went with step 3, the new last step has them
    assert json.load(open(os.path.join(traj, "trajectories_step_1.json"))) == before
    assert [m.get("probe_file") for m in manifest] == ["probes_step_1.json", None, None, "probes_step_4.json"]
    assert sorted(f for f in os.listdir(traj) if f.startswith("probes_")) == ["probes_step_1.json", "probes_step_4.json"]
    # the resumed run trained from the step-2 weights: it saved a step-4 checkpoint on top
    latest = open(os.path.join(save_path, "checkpoints", "_actor", "latest")).read().strip()
    assert latest == "global_step4"


# ----------------------------------------------------------------------------- format v2 from the job

def _initial_logprobs(model, rec) -> torch.Tensor:
    """(n, V) float64 log softmax(logits / T) at the positions that produced the response tokens,
    from a plain transformers forward of the saved sequence under the initial weights."""
    ids = [t["id"] for t in rec["generated_tokens"]]
    n_prompt = sum(1 for t in rec["generated_tokens"] if t.get("prompt"))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double() / 0.7  # (S, V) at the sampling temperature
    return torch.log_softmax(logits, -1)[n_prompt - 1 : len(ids) - 1]


def _probe_records(traj, step):
    return json.load(open(os.path.join(traj, f"probes_step_{step}.json")))


def test_alternatives_and_rollout_logprobs_equal_an_independent_forward(run):
    """Step 1 (initial weights): every marked token's alternatives are the top 5 of the same
    distribution, every response token's rollout_logprob is what that distribution gives the token
    (HF generate's KV-cached decode vs one full forward: float32 noise), and so is the trainer's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run["model"]).eval()
    records = _by_step(load_trajectories(run["traj"]))[1] + _probe_records(run["traj"], 1)
    n_marked = 0
    for rec in records:
        lp = _initial_logprobs(model, rec)  # (n, V)
        tokens = rec["pure_generated_tokens"]
        ids = torch.tensor([t["id"] for t in tokens])
        sampled = lp.gather(1, ids[:, None])[:, 0]
        assert torch.allclose(torch.tensor([t["rollout_logprob"] for t in tokens], dtype=torch.float64), sampled, atol=1e-4)
        assert torch.allclose(torch.tensor([t["logprob"] for t in tokens], dtype=torch.float64), sampled, atol=1e-4)
        top = lp.topk(5, dim=-1)
        for j, t in enumerate(tokens):
            assert ("alternatives" in t) == t["high_entropy"]
            if t["high_entropy"]:
                n_marked += 1
                assert [a["id"] for a in t["alternatives"]] == top.indices[j].tolist()
                assert [a["logprob"] for a in t["alternatives"]] == pytest.approx(top.values[j].tolist(), abs=1e-4)
                assert [a["text"] for a in t["alternatives"]] == [run["trainer"].tokenizer.decode([i])
                                                                  for i in top.indices[j].tolist()]
    assert n_marked >= 10


def test_rollout_logprobs_are_hf_generates_own_scores(run):
    """The rollout log-probs are HF generate's: step 1's generation replayed here with the worker's
    seed and batches (rows of 8), generate(output_scores=True) samples the same tokens, and the
    log-softmax of its scores at them is what was saved."""
    from transformers import AutoModelForCausalLM

    from openrlhf_ext.trainer.stages import tokenize_prompts

    model = AutoModelForCausalLM.from_pretrained(run["model"]).eval()
    tok = run["trainer"].tokenizer
    recs = sorted(_by_step(load_trajectories(run["traj"]))[1], key=lambda r: (r["experience_index"], r["sample_in_exp"]))
    prompt_ids = tokenize_prompts(tok, [r["prompt_text"] for r in recs], 32)
    torch.manual_seed((7 + 1) * 1000)  # the worker's seed at step 1: (--seed + step) * 1000 + rank
    for start in range(0, 16, 8):
        chunk = prompt_ids[start : start + 8]
        P = max(map(len, chunk))
        ids = torch.tensor([[0] * (P - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_p=1.0, top_k=0,
                                 max_new_tokens=6, pad_token_id=0, eos_token_id=2, output_scores=True,
                                 return_dict_in_generate=True)
        for b, rec in enumerate(recs[start : start + 8]):
            tokens = rec["pure_generated_tokens"]
            assert out.sequences[b, P : P + len(tokens)].tolist() == [t["id"] for t in tokens]
            for j, t in enumerate(tokens):
                expect = torch.log_softmax(out.scores[j][b].float(), -1)[t["id"]].item()
                assert t["rollout_logprob"] == pytest.approx(expect, abs=1e-5)


def test_prompt_ids_probe_files_and_the_manifest(run):
    traj, history = run["traj"], run["trainer"].history
    records = load_trajectories(traj)
    probes = {s: _probe_records(traj, s) for s in (1, 3)}
    assert not os.path.exists(os.path.join(traj, "probes_step_2.json"))  # steps 1 and 3 only
    for rec in records + probes[1] + probes[3]:
        prompt = [t["id"] for t in rec["generated_tokens"] if t.get("prompt")]
        rule = hashlib.blake2b(b"".join(i.to_bytes(8, "little") for i in prompt), digest_size=8).hexdigest()
        assert rec["prompt_id"] == rule  # docs/format.md's rule, recomputed
    probe_texts = run["trainer"].probe_prompts
    assert len(probe_texts) == 2
    for step, recs in probes.items():
        assert len(recs) == 2 * 3 and all(r["probe"] is True and r["global_step"] == step for r in recs)
        assert [r["prompt_text"] for r in recs] == [p["prompt"] for p in probe_texts for _ in range(3)]
    assert {r["prompt_id"] for r in probes[1]} == {r["prompt_id"] for r in probes[3]}  # one prompt, one id
    # never trained on: no training response answers a probe prompt
    assert not {r["prompt_text"] for r in records} & {p["prompt"] for p in probe_texts}
    manifest = [json.loads(line) for line in open(os.path.join(traj, "manifest.jsonl"))]
    assert [m.get("probe_file") for m in manifest] == ["probes_step_1.json", None, "probes_step_3.json"]
    for m, step_records in zip(manifest, _by_step(records).values()):
        tau = m["high_entropy_threshold"]
        assert m["file_bytes"] == os.path.getsize(os.path.join(traj, m["file"]))
        assert sum(c for _, c in m["fork_words"]) == sum(t["high_entropy"] for r in step_records
                                                          for t in r["pure_generated_tokens"])  # all 16 saved
        assert m["logprob_mismatch"]["max_abs"] < 1e-3  # the same weights in generate and in the trainer
        for r in probes.get(m["global_step"], []):  # probe responses marked by the step's own threshold
            assert all(t["high_entropy"] == (t["entropy_score"] >= tau) for t in r["pure_generated_tokens"])
    # the step log: a probe stage at the probe steps, and the mismatch
    assert ["time/probe" in h for h in history] == [True, False, True]
    assert all(0 <= h["mismatch/mean_abs"] <= h["mismatch/p95_abs"] < 1e-3 for h in history)
    summary = json.load(open(os.path.join(traj, "summary.json")))
    assert summary["format_version"] == 2 and summary["flags"]["save_top_k_alternatives"] == 5
    from openrlhf_ext.trajectory.tools.cli import main as cli

    assert cli(["validate", traj]) == 0
