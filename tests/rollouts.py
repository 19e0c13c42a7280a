"""Real rollouts of the embedded model (Hugging Face generate), laid out the way each trainer lays
out its experiences: this project's (= verl's) and upstream OpenRLHF's. Model-agnostic: only the
tokenizer's pad/eos ids and the model's logits are used, never what a particular model answers."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from openrlhf_ext.datasets.prompts import builtin_prompts
from openrlhf_ext.trajectory import token_entropy


@dataclass
class Rollouts:
    """R = n_prompts * n_samples responses, grouped by prompt (samples of a prompt adjacent)."""

    prompts: list  # R prompt strings
    labels: list  # R reference answers
    prompt_ids: list  # R lists of prompt token ids
    response_ids: list  # R lists of response token ids (up to and with the eos, when sampled)
    entropy: list  # R float32 tensors (n_r,): entropy of the distribution each response token came from
    log_probs: list  # R float32 tensors (n_r,): log-prob of each response token at the temperature
    rewards: torch.Tensor  # (R,) share of digits in the decoded response
    advantages: torch.Tensor  # (R,) reward normalised inside its prompt group (GRPO)
    truncated: torch.Tensor  # (R,) bool: no eos sampled
    temperature: float
    pad_token_id: int


def load_embedded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_ext.models.embedded import embedded_model_path

    path = embedded_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def forward_values(model, sequences, attention_mask, temperature):
    """(entropy, log-prob) of every token of ``sequences`` (B, S) but the first, (B, S - 1) each:
    column j is the distribution at position j, which token j + 1 was sampled from."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, S)
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids).logits[:, :-1]
    entropy = token_entropy(logits, temperature)  # (B, S - 1)
    log_probs = torch.log_softmax(logits.float() / temperature, -1).gather(-1, sequences[:, 1:, None])[..., 0]
    return entropy, log_probs  # (B, S - 1) each


@torch.no_grad()
def sample(model, tok, n_prompts=4, n_samples=2, temperature=0.7, max_new_tokens=12, seed=0) -> Rollouts:
    problems = [p for p in builtin_prompts(n_prompts, seed=seed) for _ in range(n_samples)]
    prompts = [p["prompt"] for p in problems]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    torch.manual_seed(seed)
    gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                         max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    P = enc["input_ids"].shape[1]
    prompt_ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    response_ids, truncated = [], []
    for row in gen[:, P:].tolist():
        n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        response_ids.append(row[:n])
        truncated.append(tok.eos_token_id not in row)
    # One forward over [prompt | response], each row unpadded on its own: the values every layout gets.
    entropy, log_probs = [], []
    for p, r in zip(prompt_ids, response_ids):
        seq = torch.tensor([p + r])
        ent, lp = forward_values(model, seq, torch.ones_like(seq), temperature)
        entropy.append(ent[0, len(p) - 1 :])  # (n_r,)
        log_probs.append(lp[0, len(p) - 1 :])
    texts = [tok.decode(r, skip_special_tokens=True) for r in response_ids]
    rewards = torch.tensor([sum(c.isdigit() for c in t) / max(len(t), 1) for t in texts])
    grouped = rewards.view(n_prompts, n_samples)
    advantages = ((grouped - grouped.mean(-1, keepdim=True)) / (grouped.std(-1, keepdim=True) + 1e-9)).view(-1)
    return Rollouts(prompts, [p["label"] for p in problems], prompt_ids, response_ids, entropy, log_probs,
                    rewards, advantages, torch.tensor(truncated), temperature, tok.pad_token_id)


def response_layout(ro: Rollouts, rows) -> dict:
    """Rows ``rows`` as tensors of this project's (and verl's) layout: [left-padded prompt |
    right-padded response], per-token values (B, A) over the response columns."""
    P = max(len(ro.prompt_ids[i]) for i in rows)
    A = max(len(ro.response_ids[i]) for i in rows)
    B = len(rows)
    seqs = torch.full((B, P + A), ro.pad_token_id)  # (B, S)
    attn = torch.zeros(B, P + A, dtype=torch.long)  # (B, S)
    mask = torch.zeros(B, A, dtype=torch.bool)  # (B, A)
    ent, lp, adv = torch.zeros(B, A), torch.zeros(B, A), torch.zeros(B, A)  # (B, A) each
    for b, i in enumerate(rows):
        p, r = ro.prompt_ids[i], ro.response_ids[i]
        seqs[b, P - len(p) : P] = torch.tensor(p)
        seqs[b, P : P + len(r)] = torch.tensor(r)
        attn[b, P - len(p) : P + len(r)] = 1
        mask[b, : len(r)] = True
        ent[b, : len(r)], lp[b, : len(r)] = ro.entropy[i], ro.log_probs[i]
        adv[b, : len(r)] = ro.advantages[i]
    return dict(prompts=seqs[:, :P], responses=seqs[:, P:], sequences=seqs, attention_mask=attn, mask=mask,
                entropy=ent, log_probs=lp, advantages=adv)


def ours_experiences(ro: Rollouts, micro: int) -> list:
    """This project's experiences (algo/experience.py's fields) of the rollouts."""
    import types

    out = []
    for s in range(0, len(ro.prompts), micro):
        rows = list(range(s, min(s + micro, len(ro.prompts))))
        t = response_layout(ro, rows)
        out.append(types.SimpleNamespace(
            sequences=t["sequences"], attention_mask=t["attention_mask"], action_mask=t["mask"],
            action_entropy=t["entropy"], action_log_probs=t["log_probs"], advantages=t["advantages"],
            returns=t["advantages"].clone(),
            info={"reward": ro.rewards[rows], "total_length": t["attention_mask"].sum(-1).float(),
                  "truncated": ro.truncated[rows]},
            prompts=[ro.prompts[i] for i in rows], labels=[ro.labels[i] for i in rows],
        ))
    return out


def upstream_experiences(ro: Rollouts, micro: int, Experience) -> list:
    """Upstream OpenRLHF's experiences of the rollouts, made as its code makes them.

    One single-sample ``Experience`` per response as ``SamplesGenerator._process_response_into_experience``
    builds it (openrlhf 0.11.2, trainer/ppo_utils/samples_generator.py lines 243-306: sequences =
    prompt + response unpadded, action_mask over ``[len(prompt), end)`` then ``[1:]``), joined into
    micro-batches by its own ``Experience.concat_experiences(..., pad_token_id)`` as
    ``RemoteExperienceMaker.split_rollout_samples`` does (experience_maker.py lines 70-76: right
    padding). The per-token values are then set as ``make_experience`` and
    ``compute_advantages_and_returns`` leave them (lines 210-215, 290-310): (B, S - 1), with
    group_norm's reward on every action token (gamma 1, no KL), and our ``action_entropy`` beside them.
    """
    singles = []
    for i, (p, r) in enumerate(zip(ro.prompt_ids, ro.response_ids)):
        seq = torch.tensor(p + r)  # (S_i,)
        attention_mask = torch.ones(len(seq), dtype=torch.long)
        action_mask = torch.zeros_like(attention_mask)
        action_mask[len(p) : len(p) + len(r)] = 1
        action_mask = action_mask[1:]  # (S_i - 1,) column j belongs to seq[j + 1]
        singles.append(Experience(
            sequences=seq.unsqueeze(0), attention_mask=attention_mask.unsqueeze(0),
            action_mask=action_mask.unsqueeze(0), prompts=[ro.prompts[i]], labels=[ro.labels[i]],
            rewards=ro.rewards[i : i + 1], response_length=torch.tensor([len(r)]),
            truncated=ro.truncated[i : i + 1], total_length=torch.tensor([attention_mask.float().sum()]),
            info={"reward": ro.rewards[i : i + 1]},
        ))
    out = []
    for s in range(0, len(singles), micro):
        exp = Experience.concat_experiences(singles[s : s + micro], ro.pad_token_id)
        B, S = exp.sequences.shape
        amask = exp.action_mask.bool()  # (B, S - 1)
        ent, lp, adv = torch.zeros(B, S - 1), torch.zeros(B, S - 1), torch.zeros(B, S - 1)  # (B, S - 1)
        for b in range(B):
            i, n_p = s + b, len(ro.prompt_ids[s + b])
            cols = slice(n_p - 1, n_p - 1 + len(ro.response_ids[i]))
            ent[b, cols], lp[b, cols] = ro.entropy[i], ro.log_probs[i]
        adv = ro.advantages[s : s + B, None] * amask  # (B, S - 1)
        exp.action_log_probs, exp.advantages, exp.returns = lp, adv, adv.clone()
        exp.action_entropy = ent
        out.append(exp)
    return out
