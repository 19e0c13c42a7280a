"""Training through the chunked actor forward gives the same losses as through the full logits.

A few PPO steps without Ray: the experience forward (old log-probs, entropy, the reference's
log-probs), group-normalised advantages, the 80/20 high-entropy token mask, then the update's
`actor_loss` (clipped policy loss + k3 KL loss - entropy bonus) and a plain torch Adam, once with
`Actor(chunked=False)` (the old full-logits forward) and once with the chunked one, from the same
weights on the same batches.
"""
from __future__ import annotations

import copy
import types

import pytest
import torch

from openrlhf_ext.models.actor import Actor
from openrlhf_ext.trainer.advantages import compute_advantages, high_entropy_loss_mask
from openrlhf_ext.trainer.update import actor_loss
from tests.test_actor_chunked import batch, tiny_llama

ARGS = types.SimpleNamespace(temperature=0.8, entropy_loss_coef=0.01, use_kl_loss=True, init_kl_coef=0.1,
                             kl_estimator="k3", eps_clip=0.2, advantage_estimator="group_norm",
                             generate_max_len=12, policy_loss_entropy_top_ratio=0.2)


def train(model, chunked: bool, steps: int = 3) -> list[dict]:
    """`steps` PPO steps of 2 epochs x 2 micro-batches; returns every micro-batch's loss stats."""
    actor = Actor(copy.deepcopy(model), chunked=chunked)
    ref = Actor(copy.deepcopy(model), chunked=chunked).eval()
    opt = torch.optim.Adam(actor.parameters(), lr=2e-2)
    history = []
    for step in range(steps):
        sequences, attention_mask, actions = batch(model.config.vocab_size, b=4, actions=12, seed=step)
        mask = attention_mask[:, -actions:].bool()  # (B, A)
        with torch.no_grad():  # the experience: what the trainer's forward stage makes
            old_lp, entropy = actor(sequences, attention_mask, actions, temperature=ARGS.temperature)
            ref_lp, _ = ref(sequences, attention_mask, actions, temperature=ARGS.temperature, with_entropy=False)
        rewards = torch.tensor([1.0, 0.0, 0.0, 1.0]) if step % 2 else torch.tensor([0.0, 1.0, 0.5, 0.0])
        adv, _ = compute_advantages(rewards, mask, "group_norm", n_samples_per_prompt=2)
        loss_mask = high_entropy_loss_mask(entropy, mask, ARGS.policy_loss_entropy_top_ratio).float()
        exp = dict(sequences=sequences, attention_mask=attention_mask, action_mask=mask, action_log_probs=old_lp,
                   base_action_log_probs=ref_lp, advantages=adv, loss_mask=loss_mask)
        for rows in (slice(0, 2), slice(2, 4)) * 2:  # the second epoch's ratios are off 1: clipping
            mb = {k: v[rows] for k, v in exp.items()}
            loss, stats = actor_loss(actor, mb, ARGS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(dict(stats, loss=loss.item(), mark_count=loss_mask.sum().item()))
    return history


@pytest.mark.parametrize("tied", [False, True])
def test_losses_match_the_full_logits_forward(tied):
    model = tiny_llama(vocab=500, hidden=32, tied=tied, seed=3)
    new, old = train(model, chunked=True), train(model, chunked=False)
    assert len(new) == len(old) == 12
    for a, b in zip(new, old):
        assert a.keys() == b.keys() >= {"policy_loss", "kl_loss", "entropy_loss", "clip_ratio"}
        assert a["mark_count"] == b["mark_count"]  # the same 80/20 tokens were picked
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=2e-4, rel=1e-3), k
    # the steps did move the policy: the comparison is not between two untouched models
    assert new[-1]["kl_loss"] > 1e-3 and max(h["clip_ratio"] for h in new) > 0
    assert new[-1]["entropy_loss"] != pytest.approx(new[0]["entropy_loss"], abs=1e-2)
