"""Advantage, return, KL and policy-loss numbers, checked against values worked out by hand.

Each test states the arithmetic in its comments, so a reader can redo it on paper. OpenRLHF
conventions: the samples of one prompt are adjacent, the scalar reward sits on the last real token.
"""
import math
from fractions import Fraction

import pytest
import torch

from openrlhf_ext.algo.advantages import check_advantage_config, compute_advantages, token_rewards
from openrlhf_ext.algo.kl import kl_estimate
from openrlhf_ext.algo.losses import actor_loss, high_entropy_loss_mask, policy_loss, value_loss

# Two prompts x two samples; responses of length 3, 2, 1, 3 tokens (A = 3).
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
REWARDS = torch.tensor([1.0, 0.0, 3.0, 1.0])


def approx(t, expected, tol=1e-4):
    return torch.allclose(t.float(), torch.tensor(expected, dtype=torch.float32), atol=tol)


# --- KL estimators -----------------------------------------------------------------------------

def test_kl_estimators_by_hand():
    # d = log p - log p_ref = [0.5, -1.0, 0]
    lp = torch.tensor([[-1.0, -3.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0]])
    assert approx(kl_estimate(lp, ref, "k1"), [[0.5, -1.0, 0.0]])
    assert approx(kl_estimate(lp, ref, "k2"), [[0.125, 0.5, 0.0]])  # d^2 / 2
    # k3 = exp(-d) - 1 + d: exp(-0.5) - 0.5 = 0.1065; exp(1) - 2 = 0.7183
    assert approx(kl_estimate(lp, ref, "k3"), [[math.exp(-0.5) - 0.5, math.e - 2.0, 0.0]])


def test_k3_is_never_negative_and_k1_can_be():
    lp, ref = torch.randn(64, 8), torch.randn(64, 8)
    assert (kl_estimate(lp, ref, "k3") >= 0).all()
    assert (kl_estimate(lp, ref, "k1") < 0).any()


def test_unknown_kl_estimator_is_refused():
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


# --- outcome estimators: the reward lands on every token of its response (gamma = 1) ----------

def test_reinforce_returns_and_whitened_advantages():
    adv, ret = compute_advantages(REWARDS, MASK, "reinforce", n_samples_per_prompt=2)
    # returns: each real token carries its response's reward, padding 0
    assert approx(ret, [[1, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 1]])
    # whitening over the 9 real tokens: values 1,1,1,0,0,3,1,1,1 -> mean 1, var (1+1+4)/9 = 2/3
    s = math.sqrt(2 / 3)
    assert approx(adv, [[0, 0, 0], [-1 / s, -1 / s, 0], [2 / s, 0, 0], [0, 0, 0]])


def test_rloo_leave_one_out_baseline():
    adv, ret = compute_advantages(REWARDS, MASK, "rloo", n_samples_per_prompt=2)
    # group 1 (1, 0): 1 - 0 = 1, 0 - 1 = -1; group 2 (3, 1): 3 - 1 = 2, 1 - 3 = -2 ; no whitening
    assert approx(adv, [[1, 1, 1], [-1, -1, 0], [2, 0, 0], [-2, -2, -2]])
    assert torch.equal(adv, ret)


def test_rloo_with_four_samples():
    adv, _ = compute_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.ones(4, 1, dtype=torch.bool), "rloo", 4)
    # baseline of sample 0 = mean(0, 0, 1) = 1/3 -> 2/3; of sample 1 = mean(1, 0, 1) = 2/3 -> -2/3
    assert approx(adv[:, 0], [2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_group_norm_is_grpo():
    adv, _ = compute_advantages(REWARDS, MASK, "group_norm", n_samples_per_prompt=2)
    # group (1, 0): mean 0.5, sample std sqrt(0.5) -> +-0.5/0.7071 = +-0.7071
    # group (3, 1): mean 2,   sample std sqrt(2)   -> +-1/1.4142   = +-0.7071
    k = 1 / math.sqrt(2)
    assert approx(adv, [[k, k, k], [-k, -k, 0], [k, 0, 0], [-k, -k, -k]])


def test_group_norm_all_equal_rewards_give_zero_advantage():
    adv, _ = compute_advantages(torch.ones(4), torch.ones(4, 2, dtype=torch.bool), "group_norm", 4)
    assert torch.equal(adv, torch.zeros(4, 2))  # (r - mean) = 0 exactly, std 0 + 1e-9


def test_dr_grpo_centres_without_std():
    adv, _ = compute_advantages(REWARDS, MASK, "dr_grpo", n_samples_per_prompt=2)
    # group (1, 0) -> +-0.5 ; group (3, 1) -> +-1
    assert approx(adv, [[0.5, 0.5, 0.5], [-0.5, -0.5, 0], [1, 0, 0], [-1, -1, -1]])


def test_reinforce_baseline_centres_then_whitens_over_tokens():
    adv, ret = compute_advantages(REWARDS, MASK, "reinforce_baseline", n_samples_per_prompt=2)
    # per-response values 0.5, -0.5, 1, -1 on 3, 2, 1, 3 tokens
    assert approx(ret, [[0.5, 0.5, 0.5], [-0.5, -0.5, 0], [1, 0, 0], [-1, -1, -1]])
    # token mean = (1.5 - 1 + 1 - 3) / 9 = -1/6 ; var = E[x^2] - mean^2 = (0.75 + 0.5 + 1 + 3)/9 - 1/36
    mean = -1 / 6
    std = math.sqrt(5.25 / 9 - mean**2)
    expected = [[(0.5 - mean) / std] * 3, [(-0.5 - mean) / std] * 2 + [0], [(1 - mean) / std, 0, 0], [(-1 - mean) / std] * 3]
    assert approx(adv, expected)
    # without the std the advantages are only centred
    adv_c, _ = compute_advantages(REWARDS, MASK, "reinforce_baseline", 2, advantage_std_norm=False)
    assert approx(adv_c[0], [0.5 - mean] * 3)


def test_kl_penalty_in_the_reward():
    # one response of 3 tokens, reward 1, k1 KL of 0.5 on every token, kl_coef 0.2 -> -0.1 per token
    kl = torch.full((1, 3), 0.5)
    r = token_rewards(torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool), kl=kl, kl_coef=0.2)
    assert approx(r, [[-0.1, -0.1, 0.9]])
    # two identical responses under dr_grpo: their shaped rewards are 0, so only the KL penalty is left
    _, ret = compute_advantages(torch.tensor([1.0, 1.0]), torch.ones(2, 3, dtype=torch.bool), "dr_grpo", 2,
                                kl=kl.repeat(2, 1), kl_coef=0.2)
    # reward to go of [-0.1, -0.1, -0.1]: [-0.3, -0.2, -0.1]
    assert approx(ret, [[-0.3, -0.2, -0.1]] * 2)


def test_discount_for_reinforce():
    adv, ret = compute_advantages(torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool), "reinforce", 1,
                                  gamma=0.5, advantage_std_norm=False)
    assert approx(ret, [[0.25, 0.5, 1.0]])  # 1 * 0.5^2, 1 * 0.5, 1
    assert approx(adv, [[0.25 - 7 / 12, 0.5 - 7 / 12, 1 - 7 / 12]])  # centred on the mean 1.75/3


# --- GAE ---------------------------------------------------------------------------------------

def test_gae_by_hand():
    # rewards [0, 0, 1] on the last token; values [0.5, 0.6, 0.7]; gamma 0.9, lambda 0.8
    rewards = torch.tensor([1.0])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    adv, ret = compute_advantages(rewards, mask, "gae", 1, values=values, gamma=0.9, lambd=0.8,
                                  advantage_std_norm=False)
    # delta_2 = 1 + 0 - 0.7 = 0.3            A_2 = 0.3
    # delta_1 = 0 + 0.9*0.7 - 0.6 = 0.03     A_1 = 0.03 + 0.72*0.3  = 0.246
    # delta_0 = 0 + 0.9*0.6 - 0.5 = 0.04     A_0 = 0.04 + 0.72*0.246 = 0.21712
    raw = torch.tensor([[0.21712, 0.246, 0.3]])
    assert approx(ret, (raw + values).tolist())  # returns = A + V, before normalisation
    assert approx(adv, (raw - raw.mean()).tolist())  # centred (std off)


def test_gae_ignores_values_past_the_end():
    # second response has 1 real token; a garbage value on the padding must not leak in
    values = torch.tensor([[0.0, 0.0], [0.2, 99.0]])
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    _, ret = compute_advantages(torch.tensor([1.0, 1.0]), mask, "gae", 1, values=values, lambd=1.0)
    assert approx(ret, [[1.0, 1.0], [1.0, 0.0]])


# --- configuration errors say what to change ---------------------------------------------------

@pytest.mark.parametrize("estimator", ["rloo", "group_norm", "dr_grpo", "reinforce_baseline"])
def test_group_estimators_need_groups(estimator):
    with pytest.raises(ValueError, match="n_samples_per_prompt to 2 or more"):
        check_advantage_config(estimator, n_samples_per_prompt=1)


def test_gae_without_critic_and_unknown_estimator_are_refused():
    with pytest.raises(ValueError, match="needs a critic"):
        compute_advantages(torch.ones(2), torch.ones(2, 2), "gae", 1)
    with pytest.raises(ValueError, match="unknown"):
        check_advantage_config("ppo2", 2)
    with pytest.raises(ValueError, match="gamma 1.0"):
        check_advantage_config("rloo", 2, gamma=0.9)


def test_batch_that_does_not_split_into_groups_is_refused():
    with pytest.raises(ValueError, match="groups"):
        compute_advantages(torch.ones(3), torch.ones(3, 2), "group_norm", 2)


# --- high-entropy (forking) token mask --------------------------------------------------------

def test_high_entropy_mask_keeps_the_top_share_of_real_tokens():
    ent = torch.tensor([[0.1, 0.9, 0.5, 7.0], [0.8, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # 7 real tokens (7.0 is padding); top 20% -> ceil(1.4) = 2 tokens: 0.9 and 0.8
    keep = high_entropy_loss_mask(ent, mask, 0.2)
    assert keep.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert high_entropy_loss_mask(ent, mask, 1.0).equal(mask)


def test_high_entropy_mask_counts_finite_tokens_and_the_decimal_ratio():
    # A NaN entropy is not a token to rank: 4 finite tokens, top 40% -> k = ceil(1.6) = 2: 3.0 and 2.0.
    # (Counting the NaN, n = 5 and k = 2, a top-k that ranks NaN first would keep 3.0 alone.)
    ent = torch.tensor([[3.0, 2.0, float("nan"), 1.0, 0.0]])
    assert high_entropy_loss_mask(ent, torch.ones(1, 5, dtype=torch.bool), 0.4).tolist() == [[True, True, False, False, False]]
    # ratio 0.2000000001 of 5 tokens is 1.0000000005 -> k = 2 (a ceil(r * n - 1e-9) would give 1)
    ent = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    assert high_entropy_loss_mask(ent, torch.ones(1, 5, dtype=torch.bool), 0.2000000001).sum().item() == 2
    # 0.1 * 30 is 3.0000000000000004 in floating point; the decimal 0.1 of 30 tokens is exactly 3
    ent = torch.arange(30, dtype=torch.float32)[None]
    assert high_entropy_loss_mask(ent, torch.ones(1, 30, dtype=torch.bool), 0.1).sum().item() == 3
    # ties at the threshold are all kept: top 25% of 4 tokens is k = 1, but two share the top value
    ent = torch.tensor([[1.0, 2.0, 2.0, 0.5]])
    assert high_entropy_loss_mask(ent, torch.ones(1, 4, dtype=torch.bool), 0.25).tolist() == [[False, True, True, False]]


def test_loss_mask_and_saved_marks_agree_on_the_same_step(tmp_path, tokenizer):
    """The tokens trained on (--policy_loss_entropy_top_ratio) are the tokens the trajectory files mark
    at the same ratio: a real saver writes the step, its marks are read back from the file."""
    import argparse

    from openrlhf_ext.trajectory import TrajectorySaver, add_trajectory_args, load_trajectories
    from tests.conftest import make_experience

    nan = float("nan")
    texts = ["The answer is 42.", "Wait, maybe 41 🙂", "我们来计算一下", "6 * 7 = 42, so 42."]
    exps = [make_experience(tokenizer, ["Q: 6 * 7 = ?"] * 2 + ["Q: 12 + 30 = ?"] * 2, texts, seed=s) for s in range(2)]
    # entropies from four values only (ties everywhere), a NaN in every response, padding left at 0
    pattern = torch.tensor([0.5, 2.0, nan, 1.0, 2.0, 0.5, 3.0, 1.0])
    for e in exps:
        ent = pattern.repeat(e.action_mask.shape[1] // len(pattern) + 1)[: e.action_mask.shape[1]]
        ent = ent.repeat(len(e.action_mask), 1)  # (B, A)
        ent[:, 0] = torch.arange(len(e.action_mask)) % 2 * 2.0  # more ties, on the first tokens
        e.action_entropy = torch.where(e.action_mask, ent, torch.tensor(0.0))
    for ratio in ("0.1", "0.3", "0.7"):
        parser = add_trajectory_args(argparse.ArgumentParser())
        parser.add_argument("--save_path", default=str(tmp_path / ratio))
        saver = TrajectorySaver.from_args(parser.parse_args(
            ["--save_trajectories", "--mark_high_entropy_tokens", "--high_entropy_token_ratio", ratio,
             "--num_trajectories_to_save", "8"]), tokenizer)
        saver.save_step(1, exps)
        saved = {(r["experience_index"], r["sample_in_exp"]): [t["high_entropy"] for t in r["pure_generated_tokens"]]
                 for r in load_trajectories(saver.out_dir)}
        assert len(saved) == 8
        keep = high_entropy_loss_mask(torch.cat([e.action_entropy for e in exps]),
                                      torch.cat([e.action_mask for e in exps]), float(ratio))  # (B, A) the step's
        want = {(ei, i): keep[ei * 4 + i][m].tolist() for ei, e in enumerate(exps) for i, m in enumerate(e.action_mask)}
        assert saved == want, ratio
        assert 0 < keep.sum() < torch.cat([e.action_mask for e in exps]).sum()


def test_high_entropy_mask_ratio_out_of_range():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="policy_loss_entropy_top_ratio"):
            high_entropy_loss_mask(torch.zeros(1, 2), torch.ones(1, 2), bad)


# --- PPO clipped policy loss -------------------------------------------------------------------

def test_policy_loss_clipping_by_hand():
    # ratios e^0.5 = 1.6487 (A = +1: clipped at 1.2), e^-0.5 = 0.6065 (A = -1: clipped at 0.8), 1 (A = 2)
    lp = torch.tensor([[0.5, -0.5, 0.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clip = policy_loss(lp, old, adv, torch.ones(1, 3), eps_clip=0.2)
    # per token: -min(1.6487, 1.2) = -1.2 ; -min(-0.6065, -0.8) = 0.8 ; -2  -> mean -0.8
    assert loss.item() == pytest.approx(-0.8, abs=1e-5)
    assert clip.item() == pytest.approx(2 / 3)
    loss.backward()
    # clipped tokens give no gradient; the third gives d(-ratio*2)/dlp = -2, divided by 3 tokens
    assert approx(lp.grad, [[0.0, 0.0, -2 / 3]])


def test_policy_loss_token_weights_keep_the_normaliser():
    # the 80/20 objective: unselected tokens give no gradient, the mean is still over all 4 tokens
    lp = torch.zeros(1, 4, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    weights = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    loss, _ = policy_loss(lp, torch.zeros(1, 4), adv, torch.ones(1, 4), token_weights=weights)
    assert loss.item() == pytest.approx(-(2 + 4) / 4)
    loss.backward()
    assert approx(lp.grad, [[0.0, -0.5, 0.0, -1.0]])


def test_policy_loss_aggregations():
    # response 1: 1 token with A=3 ; response 2: 3 tokens with A=1 ; ratio 1 -> per-token loss -A
    lp = torch.zeros(2, 3)
    adv = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    tok, _ = policy_loss(lp, lp, adv, mask, loss_agg="token_mean")
    seq, _ = policy_loss(lp, lp, adv, mask, loss_agg="seq_mean")
    dr, _ = policy_loss(lp, lp, adv, mask, loss_agg="seq_sum_norm", norm_len=4)
    assert tok.item() == pytest.approx(-6 / 4)  # (3 + 1 + 1 + 1) / 4 tokens
    assert seq.item() == pytest.approx(-(3 + 1) / 2)  # per-response means 3 and 1
    assert dr.item() == pytest.approx(-(3 / 4 + 3 / 4) / 2)  # sums 3 and 3, each / 4


def test_actor_loss_adds_the_kl_and_the_entropy_terms():
    # ratio 1: policy loss = -mean(A) = -(1 + 3) / 2 = -2 ; k1 KL = [0.5, 0] -> 0.25 ; entropy mean 1.5
    lp = torch.tensor([[-1.0, -2.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    loss, stats = actor_loss(lp, lp, torch.tensor([[1.0, 3.0, 50.0]]), mask, ref_log_probs=torch.tensor([[-1.5, -2.0, 0.0]]),
                             kl_coef=0.1, entropy=torch.tensor([[1.0, 2.0, 9.0]]), entropy_coef=0.01)
    assert loss.item() == pytest.approx(-2 + 0.1 * 0.25 - 0.01 * 1.5)
    assert stats == pytest.approx({"policy_loss": -2.0, "clip_ratio": 0.0, "kl_loss": 0.25, "entropy_loss": 1.5})
    # without a reference or an entropy there is no such term (a zero coefficient is not the switch)
    loss, stats = actor_loss(lp, lp, torch.tensor([[1.0, 3.0, 50.0]]), mask, kl_coef=0.1, entropy_coef=0.01)
    assert loss.item() == pytest.approx(-2.0) and set(stats) == {"policy_loss", "clip_ratio"}


def test_value_loss_takes_the_larger_of_the_clipped_and_unclipped_errors():
    # token 1: V jumped 0 -> 1 onto R = 1; clipped at 0.2 its error is 0.8^2 = 0.64 (unclipped 0)
    # token 2: V moved 0 -> 0.1 inside the clip; both errors 0.1^2 = 0.01 ; token 3 is padding
    loss = value_loss(torch.tensor([[1.0, 0.1, 7.0]]), torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]),
                      torch.tensor([[True, True, False]]), value_clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.01) / 2)


# --- properties over random batches (hypothesis) -----------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

rewards_st = st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(rewards_st, min_size=1, max_size=4).filter(lambda g: len({len(x) for x in g}) == 1 and len(g[0]) >= 2),
       estimator=st.sampled_from(["rloo", "dr_grpo", "group_norm"]))
def test_group_advantages_sum_to_zero_within_each_group(groups, estimator):
    n = len(groups[0])
    rewards = torch.tensor([r for g in groups for r in g])
    adv, _ = compute_advantages(rewards, torch.ones(len(rewards), 1, dtype=torch.bool), estimator, n)
    sums = adv[:, 0].reshape(-1, n).sum(-1)
    assert torch.allclose(sums, torch.zeros_like(sums), atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 5), min_size=1, max_size=6), data=st.data())
def test_reward_lands_once_on_the_last_real_token(lengths, data):
    A = 5
    mask = torch.tensor([[t < n for t in range(A)] for n in lengths])
    rewards = torch.tensor(data.draw(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=len(lengths), max_size=len(lengths))))
    per_token = token_rewards(rewards, mask)
    for i, n in enumerate(lengths):
        expected = rewards[i].item() if n else 0.0  # an empty response has nowhere to put its reward
        assert per_token[i].sum().item() == pytest.approx(expected, abs=1e-6)
        if n:
            assert per_token[i, n - 1].item() == pytest.approx(rewards[i].item(), abs=1e-6)


def forking_tokens_by_definition(entropy: list, mask: list, ratio: float) -> list:
    """The rule of arXiv 2506.01939 as FORMAT.md words it, in plain python (the oracle): over the n
    real tokens with a finite entropy, k = max(1, ceil(ratio * n)) for the decimal the user wrote;
    a token is kept when it is one of them and its entropy >= the k-th largest."""
    values = sorted((e for row, mrow in zip(entropy, mask) for e, m in zip(row, mrow) if m and math.isfinite(e)),
                    reverse=True)
    if not values:
        return [[False] * len(row) for row in entropy]
    k = max(1, math.ceil(Fraction(repr(ratio)) * len(values)))
    tau = values[k - 1]
    return [[bool(m and math.isfinite(e) and e >= tau) for e, m in zip(row, mrow)] for row, mrow in zip(entropy, mask)]


# Few distinct values: ties are the rule, not the exception; NaN and inf are never kept.
ENTROPIES = st.sampled_from([0.0, 0.25, 0.5, 0.5, 1.0, 2.0, 3.5, float("nan"), float("inf")])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), width=st.integers(1, 8),
       ratio=st.one_of(st.floats(0.01, 1.0), st.sampled_from([0.1, 0.2, 0.3, 0.7, 1.0])))
def test_high_entropy_loss_mask_is_the_definition_with_ties_and_nan(data, rows, width, ratio):
    ent = torch.tensor(data.draw(st.lists(st.lists(ENTROPIES, min_size=width, max_size=width), min_size=rows, max_size=rows)))
    mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=width, max_size=width), min_size=rows, max_size=rows)))
    keep = high_entropy_loss_mask(ent, mask, ratio)
    assert keep.tolist() == forking_tokens_by_definition(ent.tolist(), mask.tolist(), ratio)


@pytest.mark.parametrize("estimator", ["rloo", "dr_grpo", "group_norm", "reinforce_baseline"])
def test_a_group_of_equal_rewards_gets_no_advantage(estimator):
    """Six equal rewards (a value whose float32 mean misses it by an ulp): every advantage is 0,
    not the ulp divided by a std of ~1e-7 (which gave ~0.1 under group_norm)."""
    rewards = torch.full((6,), 1.0107104778289795)
    adv, _ = compute_advantages(rewards, torch.ones(6, 1, dtype=torch.bool), estimator, 6)
    assert torch.equal(adv, torch.zeros_like(adv))
