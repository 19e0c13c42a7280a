"""The Ray groups and the stages that drive them, on real Ray + DeepSpeed (CPU, gloo) and a tiny model:
build_groups makes what the flags ask for, forward returns every model's values in response order
(also across two reference workers), and update trains the policy and the critic. Under a minute on
2 idle cores; the whole training loop is tests/test_train_hf.py."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("ray")
pytest.importorskip("deepspeed")

import ray  # noqa: E402

from openrlhf_ext.algo.experience import make_experiences  # noqa: E402
from openrlhf_ext.cli.train_args import parse_train_args  # noqa: E402
from openrlhf_ext.ray.groups import build_groups, cpus_needed  # noqa: E402
from openrlhf_ext.ray.launcher import start_ray  # noqa: E402
from openrlhf_ext.trainer import stages  # noqa: E402
from tests.train_helpers import build_tiny_model, short_run_flags, write_reward_file  # noqa: E402

ROWS = [{"prompt": p, "label": ""} for p in ("12+30=", "Q: 6*7?", "hello", "2+2=")]
MICRO = 4  # responses per experience: 16 responses -> 4 experiences, round-robin over the workers


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("groups")
    model = build_tiny_model(str(root / "model"))
    # PPO with a critic (gae), a reference model for the KL loss, on two reference workers
    args = parse_train_args(short_run_flags(model, str(root / "run"), write_reward_file(str(root)), max_steps=1,
                                            advantage_estimator="gae", micro_rollout_batch_size=MICRO,
                                            ref_num_gpus_per_node=2))
    tokenizer = AutoTokenizer.from_pretrained(model)
    start_ray(num_cpus=cpus_needed(args))
    try:
        groups = build_groups(args, model)
        rollouts = stages.generate(groups, tokenizer, args, ROWS, seed=1)
        fwd = stages.forward(groups, rollouts, MICRO)  # before any update: the initial weights
        yield dict(args=args, groups=groups, tokenizer=tokenizer, model=model, rollouts=rollouts, fwd=fwd, root=root)
    finally:
        ray.shutdown()


def test_build_groups_makes_the_groups_the_flags_ask_for(run):
    g = run["groups"]
    assert len(g.actor) == 1 and len(g.ref) == 2 and len(g.critic) == 1
    assert g.reward is None and g.vllm is None  # no --reward_pretrain, --rollout_backend hf
    assert cpus_needed(run["args"]) >= 1 + 2 + 1  # a bundle for every worker


def test_generate_samples_every_prompt_n_times(run):
    r = run["rollouts"]
    assert r["sequences"].shape[0] == len(ROWS) * 4 and r["group_index"].tolist() == [i // 4 for i in range(16)]
    assert r["prompts"] == [row["prompt"] for row in ROWS for _ in range(4)]
    assert (r["info"]["response_length"] <= run["args"].generate_max_len).all()
    assert r["action_mask"].any(-1).all()


def test_forward_gives_every_models_values_in_response_order(run):
    from openrlhf_ext.models.actor import Actor

    r, fwd = run["rollouts"], run["fwd"]
    mask = r["action_mask"]
    with torch.no_grad():  # the same weights in this process, the whole step in one batch
        lp, ent = Actor.from_pretrained(run["model"]).eval()(r["sequences"], r["attention_mask"], mask.shape[1],
                                                             temperature=run["args"].temperature)
    assert torch.allclose(fwd.log_probs[mask], lp[mask], atol=1e-4)
    assert torch.allclose(fwd.entropy[mask], ent[mask], atol=1e-4)
    # the reference starts from the same weights; its 4 experiences went to 2 workers and came back in order
    assert torch.allclose(fwd.ref_log_probs[mask], lp[mask], atol=1e-4)
    # the critic on the whole step at once gives the values the stage put together from 4 experiences
    whole = {k: r[k] for k in stages.MODEL_INPUTS}
    values = ray.get(run["groups"].critic.workers[0].forward.remote([whole]))[0]
    assert fwd.values.shape == mask.shape and torch.allclose(fwd.values[mask], values[mask], atol=1e-4)


def test_update_trains_the_policy_and_the_critic(run):
    args, g, r, fwd = run["args"], run["groups"], run["rollouts"], run["fwd"]
    mask = r["action_mask"]
    rewards = torch.linspace(0, 1, mask.shape[0])  # (B,)
    adv = stages.advantages(args, mask, rewards, fwd)
    exps = make_experiences(r, MICRO, info={"reward": rewards, "kl": adv.kl_per_response},
                            action_log_probs=fwd.log_probs, action_entropy=fwd.entropy,
                            base_action_log_probs=fwd.ref_log_probs, values=fwd.values, kl=adv.kl,
                            advantages=adv.advantages, returns=adv.returns)
    metrics = stages.update(g, args, exps, global_step=1)
    for key in ("policy_loss", "clip_ratio", "kl_loss", "critic_loss"):
        assert math.isfinite(metrics[key]), key
    assert metrics["kl_loss"] == pytest.approx(0.0, abs=1e-3)  # the policy starts at the reference
    after = stages.forward(g, r, MICRO)
    assert not torch.allclose(after.log_probs[mask], fwd.log_probs[mask])  # the policy moved
    assert not torch.allclose(after.values[mask], fwd.values[mask])  # the critic moved
    assert torch.equal(after.ref_log_probs, fwd.ref_log_probs)  # the reference did not
    assert stages.sync_weights(g, args) is None  # no vLLM engines to sync


def test_the_full_weights_leave_the_worker_whole(run):
    """state_dict_bytes (the vLLM sync) and save_model (the final folder) give the same trained weights."""
    from safetensors.torch import load
    from transformers import AutoModelForCausalLM

    blob = ray.get(run["groups"].actor.call("state_dict_bytes"))[0]
    weights = load(blob)
    path = str(run["root"] / "saved")
    ray.get(run["groups"].actor.call("save_model", path, run["model"]))
    saved = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert weights.keys() <= saved.keys() and len(weights) > 10
    for name, tensor in weights.items():
        assert torch.equal(tensor, saved[name]), name
