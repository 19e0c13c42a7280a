"""The stages of a training step that run on the controller, without Ray: packing, scoring with a
reward function, the step's advantages / marks / metrics, the experiences, and the hand-off to the
saver. (The stages that call Ray groups run for real in tests/test_groups.py.)"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from openrlhf_ext.algo.advantages import compute_advantages
from openrlhf_ext.algo.experience import make_experiences
from openrlhf_ext.ray.groups import RayGroups
from openrlhf_ext.trainer import stages
from openrlhf_ext.trajectory import TrajectorySaver, add_trajectory_args, load_trajectories

NAN = float("nan")


def step_args(**over) -> argparse.Namespace:
    base = dict(kl_estimator="k1", advantage_estimator="group_norm", n_samples_per_prompt=2, gamma=1.0, lambd=0.95,
                use_kl_loss=False, init_kl_coef=0.0, no_advantage_std_norm=False, policy_loss_entropy_top_ratio=None)
    return argparse.Namespace(**{**base, **over})


def rollouts_of(tokenizer, prompts: list[str], responses: list[str], n: int) -> dict:
    """Packed rollouts of text prompts/responses, each response ended by EOS."""
    eos = tokenizer.eos_token_id
    return stages.pack_rollouts([tokenizer.encode(p) for p in prompts], [tokenizer.encode(r) + [eos] for r in responses],
                                prompts, ["42"] * len(prompts), n, tokenizer.pad_token_id, eos)


PROMPTS = ["Q: 6 * 7 = ?"] * 2 + ["Q: 12 + 30 = ?"] * 2
RESPONSES = ["The answer is 42.", "Wait, maybe 41", "我们来计算一下", "42"]


def test_pack_rollouts_groups_samples_and_fills_the_info(tokenizer):
    r = rollouts_of(tokenizer, PROMPTS, RESPONSES, n=2)
    B, A = r["action_mask"].shape
    assert B == 4 and A == max(len(tokenizer.encode(x)) + 1 for x in RESPONSES)
    assert r["group_index"].tolist() == [0, 0, 1, 1]
    assert r["info"]["response_length"].tolist() == [len(tokenizer.encode(x)) + 1 for x in RESPONSES]
    assert r["info"]["total_length"].tolist() == r["attention_mask"].sum(-1).tolist()
    assert r["info"]["truncated"].tolist() == [False] * 4  # every response ends in EOS
    assert r["prompts"] == PROMPTS


def test_make_experiences_cuts_every_field_and_keeps_the_info_order(tokenizer):
    r = rollouts_of(tokenizer, PROMPTS, RESPONSES, n=2)
    adv = torch.arange(4 * r["action_mask"].shape[1], dtype=torch.float32).reshape(4, -1)  # (B, A)
    exps = make_experiences(r, 3, info={"reward": torch.tensor([1.0, 0.0, 0.5, 1.0]), "kl": None},
                            advantages=adv, values=None)
    assert [len(e) for e in exps] == [3, 1]
    assert torch.equal(torch.cat([e.advantages for e in exps]), adv)
    assert torch.equal(torch.cat([e.sequences for e in exps]), r["sequences"])
    assert exps[1].prompts == PROMPTS[3:] and exps[1].group_index.tolist() == [1]
    assert list(exps[0].info) == ["response_length", "total_length", "truncated", "reward"]  # None left out
    assert exps[0].values is None and exps[0].to_payload(("sequences", "values")).keys() == {"sequences"}


def test_score_gives_the_reward_function_prompt_plus_decoded_response(tokenizer):
    r = rollouts_of(tokenizer, PROMPTS, RESPONSES, n=2)
    seen = {}

    def reward_fn(queries, prompts, labels):
        seen.update(queries=queries, prompts=prompts, labels=labels)
        return [len(q) for q in queries]

    rewards = stages.score(RayGroups(actor=None), reward_fn, tokenizer, r, micro_batch_size=2)
    assert seen["queries"] == [p + x for p, x in zip(PROMPTS, RESPONSES)]  # EOS left out of the text
    assert seen["labels"] == ["42"] * 4
    assert rewards.dtype == torch.float32 and rewards.tolist() == [float(len(p + x)) for p, x in zip(PROMPTS, RESPONSES)]


def test_advantages_stage_by_hand():
    # 2 prompts x 2 samples, responses of 2, 1, 2, 2 tokens; k1 KL = log p - log p_ref
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    fwd = stages.Forward(log_probs=torch.tensor([[-1.0, -1.0], [-2.0, 9.0], [-1.0, -1.0], [-1.0, -1.0]]),
                         entropy=torch.tensor([[0.5, 2.0], [1.0, 9.0], [2.0, 0.1], [0.2, 0.3]]),
                         ref_log_probs=torch.tensor([[-1.5, -1.0], [-1.0, 0.0], [-1.0, -1.0], [-1.0, -2.0]]))
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])
    out = stages.advantages(step_args(use_kl_loss=True, init_kl_coef=0.1, policy_loss_entropy_top_ratio=0.3),
                            mask, rewards, fwd)
    assert out.kl.tolist() == [[0.5, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]  # zero on padding
    assert out.kl_per_response.tolist() == [0.25, -1.0, 0.0, 0.5]
    # --use_kl_loss: the KL stays out of the rewards; group_norm gives +-1/sqrt(2) on every real token
    k = 1 / math.sqrt(2)
    assert torch.allclose(out.advantages, torch.tensor([[k, k], [-k, 0], [k, k], [-k, -k]]), atol=1e-4)
    assert torch.equal(out.returns, out.advantages)
    # 7 real tokens, top 30% -> k = ceil(2.1) = 3: the entropies 2.0, 2.0 and 1.0 (9.0 is padding)
    assert out.loss_mask.tolist() == [[0, 1], [1, 0], [1, 0], [0, 0]]
    # As a reward penalty (no --use_kl_loss) the KL enters the returns: reward to go of -0.1 * kl
    pen = stages.advantages(step_args(init_kl_coef=0.1, advantage_estimator="dr_grpo"), mask, rewards, fwd)
    want, _ = compute_advantages(rewards, mask, "dr_grpo", 2, kl=out.kl, kl_coef=0.1)
    assert torch.equal(pen.advantages, want) and pen.loss_mask is None
    assert pen.returns[0, 0].item() == pytest.approx(0.5 - 0.1 * 0.5)  # group-centred 0.5, minus the KL to go


def test_no_reference_means_no_kl():
    mask = torch.ones(2, 2, dtype=torch.bool)
    fwd = stages.Forward(log_probs=torch.zeros(2, 2), entropy=torch.ones(2, 2))
    out = stages.advantages(step_args(), mask, torch.tensor([1.0, 0.0]), fwd)
    assert out.kl is None and out.kl_per_response is None


def test_entropy_marks_and_stats_by_hand():
    ent = torch.tensor([[1.0, 2.0, NAN], [2.0, 0.5, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    marks = stages.mark_entropy(ent, mask, 0.2)  # 4 finite real tokens -> k = 1, tau = 2.0: both 2.0s
    assert marks.marks.tolist() == [[False, True, False], [True, False, False]] and marks.threshold == 2.0
    stats = stages.entropy_stats(ent, mask, marks)
    assert stats["entropy/mean"] == pytest.approx((1 + 2 + 2 + 0.5) / 4)
    assert stats["entropy/p80"] == pytest.approx(2.0)  # quantile of [0.5, 1, 2, 2] at 0.8
    assert stats["entropy/threshold"] == 2.0 and stats["entropy/share_above"] == 0.5
    assert stages.entropy_stats(torch.full((1, 2), NAN), torch.ones(1, 2, dtype=torch.bool),
                                stages.mark_entropy(torch.full((1, 2), NAN), torch.ones(1, 2, dtype=torch.bool), 0.2)) == {}


def test_rollout_log_probs_are_cut_with_their_response_and_the_mismatch_is_by_hand():
    # the second response runs past EOS (2): its tokens and log-probs are cut after it
    r = stages.pack_rollouts([[5], [6, 7]], [[8, 2], [9, 2, 9]], ["a", "b"], ["", ""], 1, 0, 2,
                             rollout_log_probs=[[-0.5, -0.25], [-1.0, -2.0, -3.0]])
    assert r["action_mask"].tolist() == [[True, True], [True, True]]
    assert r["rollout_log_probs"].tolist() == [[-0.5, -0.25], [-1.0, -2.0]]
    lp = torch.tensor([[-0.5, -0.75], [-1.0, -2.0]])  # |diff| 0, 0.5, 0, 0 on the 4 tokens
    stats = stages.mismatch_stats(lp, r["rollout_log_probs"], r["action_mask"])
    assert stats["mismatch/mean_abs"] == pytest.approx(0.125) and stats["mismatch/max_abs"] == 0.5
    assert stats["mismatch/p95_abs"] == pytest.approx(np.percentile([0, 0.5, 0, 0], 95))
    none = stages.pack_rollouts([[5]], [[8, 2]], ["a"], [""], 1, 0, 2)
    assert none["rollout_log_probs"] is None and stages.mismatch_stats(lp[:1], None, none["action_mask"]) == {}


def test_experiences_take_the_rollout_log_probs_and_the_forwards_tensors_by_their_field_names():
    r = stages.pack_rollouts([[5], [6, 7], [5]], [[8, 2], [9, 2], [8, 8]], ["a", "b", "a"], ["", "", ""], 1, 0, 2,
                             rollout_log_probs=[[-0.5, -0.25], [-1.0, -2.0], [-0.1, -0.2]])
    fwd = stages.Forward(log_probs=-torch.rand(3, 2), entropy=torch.rand(3, 2), ref_log_probs=-torch.rand(3, 2))
    exps = make_experiences(r, 2, **fwd.experience_fields())
    assert [len(e) for e in exps] == [2, 1]
    whole = {k: torch.cat([getattr(e, k) for e in exps]) for k in ("rollout_log_probs", "action_log_probs",
                                                                   "action_entropy", "base_action_log_probs")}
    assert torch.equal(whole["rollout_log_probs"], r["rollout_log_probs"])
    assert torch.equal(whole["action_log_probs"], fwd.log_probs) and torch.equal(whole["action_entropy"], fwd.entropy)
    assert torch.equal(whole["base_action_log_probs"], fwd.ref_log_probs)
    assert all(e.values is None and e.alternative_ids is None and e.alternative_log_probs is None for e in exps)
    # rollouts without the engine's log-probs: experiences without them
    none = stages.pack_rollouts([[5]], [[8, 2]], ["a"], [""], 1, 0, 2)
    assert make_experiences(none, 2)[0].rollout_log_probs is None


def test_step_metrics_are_means_over_the_step(tokenizer):
    r = rollouts_of(tokenizer, PROMPTS, RESPONSES, n=2)
    mask = r["action_mask"]
    adv = torch.where(mask, torch.tensor([2.0, -2.0, 1.0, -1.0])[:, None], torch.tensor(99.0))  # padding ignored
    exps = make_experiences(r, 3, info={"reward": torch.tensor([1.0, 0.0, 0.5, 1.0])}, advantages=adv)
    m = stages.step_metrics(exps)
    assert m["reward"] == pytest.approx(0.625)
    assert m["response_length"] == pytest.approx(r["info"]["response_length"].float().mean().item())
    lengths = mask.sum(-1).float()
    advantage_abs = stages.advantage_stats(adv, mask)["advantage_abs"]  # from the step's (B, A) advantages
    assert advantage_abs == pytest.approx(((lengths * torch.tensor([2.0, 2.0, 1.0, 1.0])).sum() / lengths.sum()).item())


# --- the hand-off to the saver -----------------------------------------------------------------

def make_saver(path, tokenizer, *flags) -> TrajectorySaver:
    parser = add_trajectory_args(argparse.ArgumentParser())
    parser.add_argument("--save_path", default=str(path))
    args = parser.parse_args(["--save_trajectories", "--mark_high_entropy_tokens", "--num_trajectories_to_save", "8",
                              *flags])
    return TrajectorySaver.from_args(args, tokenizer)


def step_with_entropy(tokenizer, entropy_rows):
    """A step's experiences whose entropies are `entropy_rows` (ties and NaN as given)."""
    r = rollouts_of(tokenizer, PROMPTS, RESPONSES, n=2)
    mask = r["action_mask"]
    ent = torch.zeros(mask.shape)
    for i, row in enumerate(entropy_rows):
        n = int(mask[i].sum())
        ent[i, :n] = torch.tensor((row * n)[:n])
    exps = make_experiences(r, 3, info={"reward": torch.tensor([1.0, 0.0, 0.5, 1.0])},
                            action_entropy=ent, action_log_probs=-ent, advantages=torch.zeros(mask.shape),
                            returns=torch.zeros(mask.shape))
    return r, ent, exps


def saved_files(out_dir) -> tuple[list, list]:
    records = sorted(load_trajectories(out_dir), key=lambda x: (x["experience_index"], x["sample_in_exp"]))
    manifest = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    for entry in manifest:
        entry.pop("created_at"), entry.pop("save_seconds")
    return records, manifest


ENTROPY_ROWS = [[1.0, 2.0, NAN], [0.3, 0.1], [0.5, 2.0, 1.0, NAN], [3.0, 0.5]]  # row 2 is low everywhere


def test_saver_handed_the_steps_marks_writes_what_it_computes_alone(tmp_path, tokenizer):
    r, ent, exps = step_with_entropy(tokenizer, ENTROPY_ROWS)
    marks = stages.mark_entropy(ent, r["action_mask"], 0.2)
    handed = make_saver(tmp_path / "handed", tokenizer)
    alone = make_saver(tmp_path / "alone", tokenizer)
    stages.save_trajectories(handed, 5, exps, marks)
    alone.save_step(5, exps)
    assert saved_files(handed.out_dir) == saved_files(alone.out_dir)
    assert any(t["high_entropy"] for rec in saved_files(handed.out_dir)[0] for t in rec["pure_generated_tokens"])


def test_saver_with_another_rule_ranks_by_its_own(tmp_path, tokenizer):
    # response scope: each response marks its own top tokens; the step's marks would mark fewer
    r, ent, exps = step_with_entropy(tokenizer, ENTROPY_ROWS)
    marks = stages.mark_entropy(ent, r["action_mask"], 0.2)
    for flags in (["--high_entropy_scope", "response"], ["--high_entropy_token_ratio", "0.5"]):
        handed = make_saver(tmp_path / ("handed" + flags[1]), tokenizer, *flags)
        alone = make_saver(tmp_path / ("alone" + flags[1]), tokenizer, *flags)
        stages.save_trajectories(handed, 1, exps, marks)
        alone.save_step(1, exps)
        assert saved_files(handed.out_dir) == saved_files(alone.out_dir)
        marked = sum(t["high_entropy"] for rec in saved_files(alone.out_dir)[0] for t in rec["pure_generated_tokens"])
        assert marked > int(marks.marks.sum())
    assert stages.save_trajectories(None, 1, exps, marks) is None


def test_saver_writes_handed_marks_only_when_their_rule_is_its_own(tmp_path, tokenizer):
    r, _, exps = step_with_entropy(tokenizer, ENTROPY_ROWS)
    first_tokens = torch.zeros_like(r["action_mask"])
    first_tokens[:, 0] = True  # (B, A) marks that no ranking gives
    for rule, flags, used in [((0.2, "step"), [], True), ((0.5, "step"), [], False),
                              ((0.2, "step"), ["--high_entropy_scope", "response"], False)]:
        name = f"{rule[0]}-{len(flags)}"
        handed = make_saver(tmp_path / ("handed" + name), tokenizer, *flags)
        alone = make_saver(tmp_path / ("alone" + name), tokenizer, *flags)
        handed.save_step(2, exps, marks=(first_tokens, 0.25), marks_rule=rule)
        alone.save_step(2, exps, marks=None if not used else (first_tokens, 0.25))
        assert saved_files(handed.out_dir) == saved_files(alone.out_dir), (rule, flags)
        assert (saved_files(handed.out_dir)[1][0]["high_entropy_threshold"] == 0.25) == used


def test_saver_writes_the_marks_it_is_handed_and_only_when_marking(tmp_path, tokenizer):
    r, _, exps = step_with_entropy(tokenizer, ENTROPY_ROWS)
    first_tokens = torch.zeros_like(r["action_mask"])
    first_tokens[:, 0] = True  # (B, A) an unmistakable set of marks
    saver = make_saver(tmp_path / "marking", tokenizer)
    saver.save_step(2, exps, marks=(first_tokens, 0.25))
    records, manifest = saved_files(saver.out_dir)
    assert all([t["high_entropy"] for t in rec["pure_generated_tokens"]] == [True] + [False] * (len(rec["pure_generated_tokens"]) - 1)
               for rec in records)
    assert manifest[0]["high_entropy_threshold"] == 0.25 and records[0]["high_entropy_threshold"] == 0.25
    parser = add_trajectory_args(argparse.ArgumentParser())
    quiet = TrajectorySaver.from_args(parser.parse_args(["--save_trajectories", "--trajectory_dir", str(tmp_path / "q")]),
                                      tokenizer)
    quiet.save_step(2, exps, marks=(first_tokens, 0.25))
    records, manifest = saved_files(quiet.out_dir)
    assert not any(t["high_entropy"] for rec in records for t in rec["pure_generated_tokens"])
    assert manifest[0]["high_entropy_threshold"] is None
