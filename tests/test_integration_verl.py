"""The verl drop-in: ``TrajectoryRayPPOTrainer`` keeps the ``entropys`` of the old-log-prob pass and
saves each step after the advantages, configured by ``+trainer.trajectory_saver.*``.

verl cannot train without GPUs, so the trainer is built with ``object.__new__`` and the attributes
its methods read (verl's real config, composed by Hydra from verl's own yaml), and the methods
``fit`` calls are called in ``fit``'s order (verl 0.9.1 ray_trainer.py, RayPPOTrainer.fit): the
batch is verl's real ``DataProto`` in verl's layout, ``_compute_old_log_prob`` runs verl's own
padding conversions around ``actor_rollout_wg.compute_log_prob``, the advantages are verl's
``compute_advantage`` (GRPO). Only the worker group is a stand-in: it computes log-probs and
entropies with the embedded model on the CPU, in the no-padding format verl's FSDP workers return.
Runs in its own venv (.ci/verl_test.sh: verl pins transformers < 5.11); skipped where verl is absent.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl", reason="verl runs in its own venv: .ci/verl_test.sh")

from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage, compute_response_mask  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402

from openrlhf_ext.integrations.verl import TrajectoryRayPPOTrainer, TrajectoryTaskRunner, main  # noqa: E402
from openrlhf_ext.trajectory import load_trajectories  # noqa: E402
from openrlhf_ext.trajectory.files import read_manifest  # noqa: E402
from openrlhf_ext.trajectory.marks import top_count  # noqa: E402
from tests import rollouts  # noqa: E402

TEMPERATURE = 0.7
SAVER = ["+trainer.trajectory_saver.save_trajectories=true", "+trainer.trajectory_saver.mark_high_entropy_tokens=true",
         "+trainer.trajectory_saver.high_entropy_token_ratio=0.2", "+trainer.trajectory_saver.num_trajectories_to_save=8"]


def verl_config(folder, *overrides):
    from hydra import compose, initialize_config_dir

    import verl.trainer.main_ppo as main_ppo

    with initialize_config_dir(os.path.join(os.path.dirname(main_ppo.__file__), "config"), version_base=None):
        return compose("ppo_trainer", overrides=[
            "algorithm.adv_estimator=grpo", f"actor_rollout_ref.rollout.temperature={TEMPERATURE}",
            "actor_rollout_ref.rollout.n=2", f"trainer.default_local_dir={folder}", *overrides])


class CPUActorWorkerGroup:
    """Stand-in for verl's actor worker group, computing with the embedded model on the CPU what
    verl's workers return from ``compute_log_prob``: for the engine workers (verl >= 0.8's default)
    a no-padding TensorDict in, nested ``log_probs`` / ``entropy`` out (value at position p: the
    distribution of token p + 1); for the legacy FSDP workers (0.7's ``use_legacy_worker_impl:
    auto``) a DataProto in, ``old_log_probs`` / ``entropys`` (B, R) out. At the batch's temperature."""

    def __init__(self, model, folder):
        self.model, self.folder, self.updates = model, folder, []

    def _row_values(self, seq, temperature):
        ent, lp = rollouts.forward_values(self.model, seq[None], torch.ones_like(seq[None]), temperature)
        return ent[0], lp[0]  # (n - 1,) each

    def compute_log_prob(self, data):
        if isinstance(data, DataProto):
            return self._legacy_compute_log_prob(data)
        input_ids = data["input_ids"]  # nested (B, j)
        temperature = tu.get(data, "temperature")
        ents, lps = [], []
        for seq in input_ids.unbind():
            ent, lp = self._row_values(seq, temperature)
            ents.append(torch.cat([ent, torch.zeros(1)]))
            lps.append(torch.cat([lp, torch.zeros(1)]))
        nested = lambda parts: torch.nested.nested_tensor_from_jagged(torch.cat(parts), offsets=input_ids.offsets())  # noqa: E731
        return tu.get_tensordict({"entropy": nested(ents), "log_probs": nested(lps)},
                                 non_tensor_dict={"metrics": {"mfu": 0.0}})

    def _legacy_compute_log_prob(self, data):
        t, temperature = data.batch, data.meta_info["temperature"]
        R = t["responses"].shape[1]
        ent, lp = torch.zeros(len(data), R), torch.zeros(len(data), R)  # (B, R)
        for i, (seq, real) in enumerate(zip(t["input_ids"], t["attention_mask"].bool())):
            n_r = int(real[-R:].sum())
            e, p = self._row_values(seq[real], temperature)
            ent[i, :n_r], lp[i, :n_r] = e[len(e) - n_r :], p[len(p) - n_r :]
        return DataProto.from_dict(tensors={"old_log_probs": lp, "entropys": ent}, meta_info={"temperature": temperature})

    def update_actor(self, data):
        step = len(self.updates) + 1
        # the step was saved before the update, with the advantages
        self.updates.append(os.path.exists(os.path.join(self.folder, "trajectories", f"trajectories_step_{step}.json")))
        if isinstance(data, DataProto):
            return DataProto(meta_info={"metrics": {}})
        return tu.get_tensordict({}, non_tensor_dict={"metrics": {"mfu": 0.0}})


class CPUCriticWorkerGroup:
    """Stand-in for verl's critic worker group: ``train_mini_batch`` returns a future of metrics."""

    def __init__(self):
        self.calls = 0

    def update_critic(self, data):  # the legacy workers'
        self.calls += 1
        return DataProto(meta_info={"metrics": {}})

    def train_mini_batch(self, data):
        self.calls += 1
        done = tu.get_tensordict({}, non_tensor_dict={"metrics": {"mfu": 0.0}})
        return type("Future", (), {"get": lambda self: done})()


def make_trainer(config, model, tok, folder):
    trainer = object.__new__(TrajectoryRayPPOTrainer)  # no workers, no GPUs
    trainer.config, trainer.tokenizer = config, tok
    trainer.actor_rollout_wg = CPUActorWorkerGroup(model, folder)
    # read by verl 0.7-0.8's _compute_old_log_prob; 0.7's default "auto" runs the legacy workers
    trainer.use_legacy_worker_impl = config.trainer.get("use_legacy_worker_impl", "disable")
    return trainer


def verl_batch(ro) -> DataProto:
    """The rollouts as verl's batch after generation: left-padded ``prompts``, right-padded
    ``responses``, ``input_ids`` = both, ``response_mask`` by verl's ``compute_response_mask``."""
    t = rollouts.response_layout(ro, range(len(ro.prompts)))
    n = len(ro.prompts)
    position_ids = (t["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    batch = DataProto.from_dict(
        tensors={"prompts": t["prompts"], "responses": t["responses"], "input_ids": t["sequences"],
                 "attention_mask": t["attention_mask"], "position_ids": position_ids},
        non_tensors={"uid": np.array([f"prompt-{i // 2}" for i in range(n)], dtype=object),
                     "data_source": np.array(["arith"] * n, dtype=object),
                     "reward_model": np.array([{"ground_truth": lab, "style": "rule"} for lab in ro.labels], dtype=object)},
        meta_info={"temperature": TEMPERATURE},
    )
    batch.batch["response_mask"] = compute_response_mask(batch)
    return batch


def verl_step(trainer, batch, ro, step, gap_row=None):
    """What RayPPOTrainer.fit does between generation and the actor update."""
    trainer.global_steps = step
    if gap_row is not None:  # a multi-turn rollout: response token 1 came from a tool
        mask = batch.batch["response_mask"].clone()  # (compute_response_mask's is a view of attention_mask)
        mask[gap_row, 1] = 0
        batch.batch["response_mask"] = mask
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    old_log_prob.batch.pop("entropys")  # fit logs their mean and drops them
    batch = batch.union(old_log_prob)
    scores = torch.zeros_like(batch.batch["response_mask"], dtype=torch.float32)  # (B, R)
    last = batch.batch["attention_mask"][:, -scores.shape[1]:].sum(-1) - 1
    scores[torch.arange(len(last)), last] = ro.rewards  # the reward manager's: on the last token
    batch.batch["token_level_scores"] = batch.batch["token_level_rewards"] = scores
    batch.non_tensor_batch["acc"] = (ro.rewards.numpy() > 0.5).astype(float)  # a reward extra info
    cfg = trainer.config
    batch = compute_advantage(batch, adv_estimator=cfg.algorithm.adv_estimator, gamma=cfg.algorithm.gamma,
                              lam=cfg.algorithm.lam, num_repeat=cfg.actor_rollout_ref.rollout.n,
                              norm_adv_by_std_in_grpo=True, config=cfg.algorithm)
    trainer._update_actor(batch)
    return batch


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model, tok = rollouts.load_embedded()
    folder = tmp_path_factory.mktemp("verl")
    trainer = make_trainer(verl_config(folder, *SAVER), model, tok, folder)
    steps = {}
    for step in (1, 2):
        ro = rollouts.sample(model, tok, n_prompts=4, n_samples=2, temperature=TEMPERATURE, seed=step)
        steps[step] = (ro, verl_step(trainer, verl_batch(ro), ro, step, gap_row=3 if step == 2 else None))
    return folder, steps, tok, trainer


def test_each_step_is_saved_after_the_advantages_and_before_the_update(run):
    folder, _, _, trainer = run
    out = folder / "trajectories"
    assert trainer.actor_rollout_wg.updates == [True, True]
    load_trajectories(out)  # strict
    manifest = read_manifest(out / "manifest.jsonl")
    assert [m["global_step"] for m in manifest] == [1, 2] and all(m["num_saved"] == 8 for m in manifest)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flags"]["high_entropy_token_ratio"] == 0.2


def test_records_are_verls_rollouts_with_their_entropy(run):
    folder, steps, tok, _ = run
    for step, (ro, batch) in steps.items():
        records = load_trajectories(folder / "trajectories" / f"trajectories_step_{step}.json")
        groups = {}
        for rec in records:
            ids = [t["id"] for t in rec["generated_tokens"]]
            n_p = sum(1 for t in rec["generated_tokens"] if t.get("prompt"))
            # verl's batch is one experience: sample_in_exp is the row (two samples of a prompt may
            # be the same text, so the row is not found by its ids)
            i = rec["sample_in_exp"]
            assert rec["experience_index"] == 0 and (ids[:n_p], ids[n_p:]) == (ro.prompt_ids[i], ro.response_ids[i])
            assert rec["prompt_text"] == ro.prompts[i] and rec["label"] == ro.labels[i]
            assert rec["generated_text"] == tok.decode(ids) == "".join(t["text"] for t in rec["generated_tokens"])
            assert rec["pure_generated_text"] == tok.decode(ro.response_ids[i])
            toks = rec["pure_generated_tokens"]
            expected_ent, expected_lp = ro.entropy[i].tolist(), ro.log_probs[i].tolist()
            if step == 2 and i == 3:  # the tool token keeps its text, with no entropy
                assert toks[1]["entropy_score"] is None and toks[1]["logprob"] is None
                expected_ent[1] = expected_lp[1] = None
            assert [t["entropy_score"] for t in toks] == pytest.approx(expected_ent, abs=1e-5)
            assert [t["logprob"] for t in toks] == pytest.approx(expected_lp, abs=1e-5)
            mask = batch.batch["response_mask"][i].bool()
            assert rec["advantages"] == pytest.approx(float(batch.batch["advantages"][i][mask].mean()), abs=1e-6)
            assert rec["info"]["reward"] == pytest.approx(float(ro.rewards[i]))
            assert rec["info"]["data_source"] == "arith" and "acc" in rec["info"]
            groups.setdefault(i // 2, set()).add(rec["group_index"])
        assert all(len(g) == 1 for g in groups.values()) and len({g.pop() for g in groups.values()}) == len(groups)


def test_marks_are_step_wide(run):
    folder, _, _, _ = run
    for entry in read_manifest(folder / "trajectories" / "manifest.jsonl"):
        records = load_trajectories(folder / "trajectories" / entry["file"])
        scores = sorted((t["entropy_score"] for r in records for t in r["pure_generated_tokens"]
                         if t["entropy_score"] is not None), reverse=True)
        assert entry["high_entropy_threshold"] == pytest.approx(scores[top_count(0.2, len(scores)) - 1])
        assert sum(t["high_entropy"] for r in records for t in r["pure_generated_tokens"]) >= top_count(0.2, len(scores))


def test_a_reordered_batch_is_saved_without_entropy_rather_than_misaligned(tmp_path, caplog):
    model, tok = rollouts.load_embedded()
    trainer = make_trainer(verl_config(tmp_path, *SAVER), model, tok, tmp_path)
    ro = rollouts.sample(model, tok, n_prompts=2, n_samples=2, temperature=TEMPERATURE, seed=7)
    batch = verl_batch(ro)
    trainer.global_steps = 1
    old, _ = trainer._compute_old_log_prob(batch)
    batch = batch.union(old)
    batch.reorder(torch.tensor([2, 3, 0, 1]))  # the two prompts swap (two samples of one prompt may be the same text)
    trainer.critic_wg = CPUCriticWorkerGroup()
    trainer._update_critic(batch)  # the first update of the step saves (critic warm-up steps too)
    trainer._update_actor(batch)  # ... once
    records = load_trajectories(tmp_path / "trajectories")
    assert len(records) == 4 and all(t["entropy_score"] is None for r in records for t in r["pure_generated_tokens"])
    assert "reordered" in caplog.text and trainer.critic_wg.calls == 1


def test_hydra_keys_are_checked_and_main_runs_verls_entry_with_our_runner(tmp_path, monkeypatch):
    import verl.trainer.main_ppo as main_ppo

    model, tok = rollouts.load_embedded()
    with pytest.raises(ValueError, match=r"\+trainer.trajectory_saver: unknown key 'ratio'"):
        make_trainer(verl_config(tmp_path, "+trainer.trajectory_saver.ratio=0.1"), model, tok, tmp_path)._trajectory_saver()
    monkeypatch.chdir(tmp_path)  # Hydra's outputs/ folder goes here
    seen = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class=None: seen.append((config, task_runner_class)))
    # what verl's own config checks ask of any run (its main validates before run_ppo)
    argv = ["x", f"trainer.default_local_dir={tmp_path}", "algorithm.adv_estimator=grpo",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2", *SAVER]
    monkeypatch.setattr(sys, "argv", [*argv, "++trainer.use_v1=false"])  # ++: 0.7-0.8 have no such key
    main()
    (config, runner), = seen
    assert runner is TrajectoryTaskRunner and config.trainer.trajectory_saver.high_entropy_token_ratio == 0.2
    if "use_v1" in verl_config(tmp_path).trainer:  # verl >= 0.9: its new trainer is not hooked, and that is said
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit, match="trainer.use_v1=false"):
            main()


def test_the_launch_example_composes_with_verls_config(tmp_path):
    """scripts/verl_grpo_with_trajectories.sh: every override is one verl's config takes, and the
    saver it asks for is built from them."""
    import re
    from pathlib import Path

    model, tok = rollouts.load_embedded()
    script = (Path(__file__).parent.parent / "scripts" / "verl_grpo_with_trajectories.sh").read_text()
    overrides = re.findall(r"^\s+([+\w.]+=.*?)\s*\\$", script, flags=re.M)
    overrides = [o.replace('"$DATA', '"/data').replace('"$MODEL"', "m").replace('"$SAVE"', str(tmp_path)).replace('"', "")
                 for o in overrides]
    assert len(overrides) > 30 and any(o.startswith("+trainer.trajectory_saver.") for o in overrides)
    from hydra import compose, initialize_config_dir

    import verl.trainer.main_ppo as main_ppo

    with initialize_config_dir(os.path.join(os.path.dirname(main_ppo.__file__), "config"), version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
    saver = make_trainer(config, model, tok, tmp_path)._trajectory_saver()
    assert saver.out_dir == tmp_path / "trajectories" and saver.num_to_save == 32 and saver.save_trace
