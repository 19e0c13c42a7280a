"""Records: a step's experiences flattened (``collect_step``), and one response as a FORMAT.md
record (``build_record``). Shared by the saver and the converters."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .files import finite_or_none
from .layouts import as_response_layout
from .texts import token_texts
from openrlhf_ext.utils.tensors import masked_mean


@dataclass
class StepBatch:
    """Every response of one step, flattened over experiences and padded to one width.

    R responses, A the widest response, P the widest prompt. Token ids stay in arrays; python lists
    are made only for the responses that get saved (``prompt_ids(i)``, ``response_ids(i)``).
    """

    prompt_tokens: np.ndarray  # (R, P) prompt token ids, left-padded
    prompt_mask: np.ndarray  # (R, P) bool, true on real prompt tokens
    responses: np.ndarray  # (R, A) response token ids, right-padded
    mask: torch.Tensor  # (R, A) bool, true on real response tokens
    entropy: torch.Tensor  # (R, A) entropy of the sampling distribution, NaN where unknown
    # (R, A) log-prob of the sampled token, recomputed by the trainer under the weights that sampled
    # it (not the rollout engine's own); NaN where unknown
    log_probs: torch.Tensor
    advantages: np.ndarray  # (R,) mean advantage over the response tokens
    returns: np.ndarray  # (R,) mean return over the response tokens
    rewards: np.ndarray  # (R,)
    info: list  # R dicts of per-sample info values (python scalars)
    experience_index: list  # R ints
    sample_in_exp: list  # R ints
    group: list  # R ints: the prompt group (same prompt), numbered in order of first appearance
    labels: list  # R labels or None
    prompts: list  # R prompt strings or None
    # (R, A) the log-prob the rollout engine reported for each sampled token; NaN where unknown;
    # None when no experience of the step carried them
    rollout_log_probs: torch.Tensor | None = None
    alternative_ids: np.ndarray | None = None  # (R, A, K) int64 the K most probable tokens, -1 where unknown
    alternative_log_probs: np.ndarray | None = None  # (R, A, K) float32 their log-probs, NaN where unknown

    def __len__(self) -> int:
        return self.responses.shape[0]

    def prompt_ids(self, i: int) -> list:
        return self.prompt_tokens[i][self.prompt_mask[i]].tolist()

    def response_ids(self, i: int) -> list:
        return self.responses[i][self.mask[i].numpy()].tolist()


def prompt_id(prompt_ids) -> str:
    """A prompt's ``prompt_id`` (FORMAT.md v2): the first 16 hex digits of BLAKE2b over its token
    ids as little-endian int64. The same prompt ids give the same id at every step of a run (and
    in every run with the same tokenizer and prompt template); padding is not part of them.

    Example:
        >>> prompt_id([49, 43, 49, 61]) == prompt_id([49, 43, 49, 61]) != prompt_id([49, 43, 50, 61])
        True
        >>> len(prompt_id([49, 43, 49, 61]))
        16
    """
    return hashlib.blake2b(np.asarray(prompt_ids, dtype="<i8").tobytes(), digest_size=8).hexdigest()


def _rows(value, n: int, what: str) -> list:
    """A per-sample value (tensor, array, list, scalar) as a list of n python values."""
    if value is None:
        return [None] * n
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.reshape(-1).tolist() if value.dim() <= 1 or value.shape[0] != n else value.tolist()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"experience {what} has {len(value)} values for {n} samples")
    return list(value)


def _masked_mean(values: torch.Tensor | None, mask: torch.Tensor) -> np.ndarray:
    if values is None:
        return np.full(mask.shape[0], np.nan)
    values = values.detach().float().cpu()
    if values.dim() == 1:  # already per sample
        return values.numpy().astype(np.float64)
    return masked_mean(values, mask, dim=-1).numpy().astype(np.float64)


def collect_step(experiences, layout: str = "auto") -> StepBatch:
    """Flatten a step's experiences into one ``StepBatch`` (the layout the saver works on).

    ``layout`` is "response", "shifted" (upstream OpenRLHF >= 0.8.3) or "auto" (see layouts.py);
    an experience that fits none raises ``ExperienceLayoutError`` before anything is built."""
    parts = []
    for e_idx, exp in enumerate(experiences):
        exp = as_response_layout(exp, layout, index=e_idx)
        seqs = exp.sequences.detach().cpu().numpy()  # (B, S) prompt (left-padded) then response
        action_mask = exp.action_mask.detach().cpu().bool()  # (B, A)
        b, a = action_mask.shape
        attn = getattr(exp, "attention_mask", None)
        attn = np.ones(seqs.shape, dtype=bool) if attn is None else attn.detach().cpu().bool().numpy()  # (B, S)
        ent = getattr(exp, "action_entropy", None)
        ent = torch.full((b, a), float("nan")) if ent is None else ent.detach().float().cpu()  # (B, A)
        lp = getattr(exp, "action_log_probs", None)
        lp = torch.full((b, a), float("nan")) if lp is None else lp.detach().float().cpu()  # (B, A)
        rlp = getattr(exp, "rollout_log_probs", None)
        rlp = None if rlp is None else rlp.detach().float().cpu()  # (B, A)
        alt_ids, alt_lps = getattr(exp, "alternative_ids", None), getattr(exp, "alternative_log_probs", None)
        if alt_ids is not None and alt_lps is not None:
            alt_ids = alt_ids.detach().cpu().numpy().astype(np.int64)  # (B, A, K)
            alt_lps = alt_lps.detach().float().cpu().numpy()  # (B, A, K)
        else:
            alt_ids = alt_lps = None
        info = getattr(exp, "info", None) or {}
        info_rows = {k: _rows(v, b, f"info[{k!r}]") for k, v in info.items()}
        p_len = seqs.shape[1] - a
        groups = _rows(getattr(exp, "group_index", None), b, "group_index")
        if all(g is None for g in groups):  # same prompt ids = same prompt group
            groups = [row[m].tobytes() for row, m in zip(seqs[:, :p_len], attn[:, :p_len])]
        parts.append(
            dict(
                prompt_tokens=seqs[:, :p_len],
                prompt_mask=attn[:, :p_len],
                responses=seqs[:, p_len:],
                entropy=ent,
                log_probs=lp,
                rollout_log_probs=rlp,
                alternative_ids=alt_ids,
                alternative_log_probs=alt_lps,
                mask=action_mask,
                advantages=_masked_mean(getattr(exp, "advantages", None), action_mask),
                returns=_masked_mean(getattr(exp, "returns", None), action_mask),
                info=[{k: v[i] for k, v in info_rows.items()} for i in range(b)],
                experience_index=[e_idx] * b,
                sample_in_exp=list(range(b)),
                group=groups,
                labels=_rows(getattr(exp, "labels", None), b, "labels"),
                prompts=_rows(getattr(exp, "prompts", None), b, "prompts"),
            )
        )
    if not parts:
        empty = torch.zeros(0, 0)
        no_ids = np.zeros((0, 0), dtype=np.int64)
        return StepBatch(no_ids, no_ids.astype(bool), no_ids, empty.bool(), empty, empty,
                         np.zeros(0), np.zeros(0), np.zeros(0), [], [], [], [], [], [])
    width = max(p["mask"].shape[1] for p in parts)
    p_width = max(p["prompt_tokens"].shape[1] for p in parts)

    def pad(t, fill):  # right-pad a (B, a) tensor to (B, width)
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    def pad_np(x, to, left=False):
        extra = to - x.shape[1]
        return np.pad(x, ((0, 0), (extra, 0) if left else (0, extra)))

    def cat_list(key):
        return [x for p in parts for x in p[key]]

    rollout_log_probs = None
    if any(p["rollout_log_probs"] is not None for p in parts):  # NaN for experiences without them
        rollout_log_probs = torch.cat([pad(p["log_probs"].new_full(p["log_probs"].shape, float("nan"))
                                           if p["rollout_log_probs"] is None else p["rollout_log_probs"], float("nan"))
                                       for p in parts])
    alternative_ids, alternative_log_probs = _cat_alternatives(parts, width)

    info = cat_list("info")
    group_number: dict = {}
    groups = [group_number.setdefault(g, len(group_number)) for g in cat_list("group")]
    rewards = np.array([_float(i.get("reward")) for i in info], dtype=np.float64)
    return StepBatch(
        prompt_tokens=np.concatenate([pad_np(p["prompt_tokens"], p_width, left=True) for p in parts]),
        prompt_mask=np.concatenate([pad_np(p["prompt_mask"], p_width, left=True) for p in parts]),
        responses=np.concatenate([pad_np(p["responses"], width) for p in parts]),
        mask=torch.cat([pad(p["mask"], False) for p in parts]),
        entropy=torch.cat([pad(p["entropy"], float("nan")) for p in parts]),
        log_probs=torch.cat([pad(p["log_probs"], float("nan")) for p in parts]),
        advantages=np.concatenate([p["advantages"] for p in parts]),
        returns=np.concatenate([p["returns"] for p in parts]),
        rewards=rewards,
        info=info,
        experience_index=cat_list("experience_index"),
        sample_in_exp=cat_list("sample_in_exp"),
        group=groups,
        labels=cat_list("labels"),
        prompts=cat_list("prompts"),
        rollout_log_probs=rollout_log_probs,
        alternative_ids=alternative_ids,
        alternative_log_probs=alternative_log_probs,
    )


def _cat_alternatives(parts: list[dict], width: int):
    """(R, width, K) ids and log-probs of the experiences' alternatives, -1 / NaN where an
    experience had none or fewer; (None, None) when none had any."""
    have = [p for p in parts if p["alternative_ids"] is not None]
    if not have:
        return None, None
    k = max(p["alternative_ids"].shape[2] for p in have)
    ids, lps = [], []
    for p in parts:
        b, a = p["mask"].shape
        ids.append(np.full((b, width, k), -1, dtype=np.int64))
        lps.append(np.full((b, width, k), np.nan, dtype=np.float32))
        if p["alternative_ids"] is not None:
            kk = p["alternative_ids"].shape[2]
            ids[-1][:, :a, :kk] = p["alternative_ids"]
            lps[-1][:, :a, :kk] = p["alternative_log_probs"]
    return np.concatenate(ids), np.concatenate(lps)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def build_record(
    tokenizer,
    *,
    global_step: int,
    experience_index: int,
    sample_in_exp: int,
    prompt_ids: list,
    response_ids: list,
    entropy: list,
    log_probs: list,
    high_entropy: list,
    advantages: float,
    returns: float,
    info: dict,
    threshold=None,
    ratio=None,
    label=None,
    prompt_text=None,
    group_index=None,
    rollout_log_probs: list | None = None,
    alternatives: list | None = None,
    probe: bool = False,
) -> dict:
    """One trajectory record of FORMAT.md from one response's ids and per-token values.

    ``entropy``, ``log_probs`` and ``high_entropy`` are lists as long as ``response_ids``
    (non-finite values become null); so are, when given, ``rollout_log_probs`` (each token gets a
    ``rollout_logprob``) and ``alternatives`` (a token gets the list at its place unless it is
    None). The record's ``prompt_id`` is ``prompt_id(prompt_ids)``; ``probe`` marks a response to
    a probe prompt.

    Example (a toy byte-level tokenizer: an id is a byte, and a character split over several
    tokens goes whole to the one that completes it):
        >>> from openrlhf_ext.trajectory.toy import toy_tokenizer
        >>> response = list("ok 🙂".encode())                     # 7 bytes, 7 tokens
        >>> rec = build_record(toy_tokenizer(), global_step=3, experience_index=0, sample_in_exp=1,
        ...     prompt_ids=list(b"Hi?"), response_ids=response, entropy=[0.1, 0.2, 0.3, 2.5, 0.4, 0.5, float("nan")],
        ...     log_probs=[-0.1] * 7, high_entropy=[False, False, False, True, False, False, False],
        ...     advantages=0.5, returns=0.5, info={"reward": 1.0})
        >>> [t["text"] for t in rec["pure_generated_tokens"]], rec["pure_generated_text"]
        (['o', 'k', ' ', '', '', '', '🙂'], 'ok 🙂')
        >>> rec["pure_generated_tokens"][6]["entropy_score"], rec["info"], rec["prompt_text"]
        (None, {'reward': 1.0, 'response_length': 7}, 'Hi?')
    """
    n_prompt = len(prompt_ids)
    full_texts = token_texts(tokenizer, list(prompt_ids) + list(response_ids))
    # With a prompt, the response's own decode can differ at the boundary (a character split
    # across it, a SentencePiece leading space), so it is decoded on its own.
    pure_texts = token_texts(tokenizer, list(response_ids)) if n_prompt else full_texts

    def response_token(text, j, tid):
        token = {
            "text": text,
            "high_entropy": bool(high_entropy[j]),
            "entropy_score": finite_or_none(entropy[j]),
            "id": int(tid),
            "logprob": finite_or_none(log_probs[j]),
        }
        if rollout_log_probs is not None:
            token["rollout_logprob"] = finite_or_none(rollout_log_probs[j])
        if alternatives is not None and alternatives[j] is not None:
            token["alternatives"] = alternatives[j]
        return token

    prompt_tokens = [
        {"text": text, "high_entropy": False, "entropy_score": None, "prompt": True, "id": int(tid)}
        for text, tid in zip(full_texts[:n_prompt], prompt_ids)
    ]
    generated = prompt_tokens + [
        response_token(text, j, tid) for j, (text, tid) in enumerate(zip(full_texts[n_prompt:], response_ids))
    ]
    pure = [response_token(text, j, tid) for j, (text, tid) in enumerate(zip(pure_texts, response_ids))]
    info = {k: _info_value(v) for k, v in info.items()}
    info["reward"] = finite_or_none(info.get("reward"))
    info["response_length"] = len(response_ids)
    prompt_decoded = "".join(full_texts[:n_prompt])
    record = {
        "global_step": int(global_step),
        "experience_index": int(experience_index),
        "sample_in_exp": int(sample_in_exp),
        "generated_tokens": generated,
        "pure_generated_tokens": pure,
        "generated_text": "".join(full_texts),
        "pure_generated_text": "".join(pure_texts),
        "advantages": finite_or_none(advantages),
        "return": finite_or_none(returns),
        "info": info,
        "prompt_text": prompt_text if isinstance(prompt_text, str) else prompt_decoded,
        "label": label,
        "group_index": group_index,
        "high_entropy_threshold": finite_or_none(threshold),
        "high_entropy_token_ratio": ratio,
        "prompt_id": prompt_id(prompt_ids),
    }
    if probe:
        record["probe"] = True
    return record


def _info_value(v):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return finite_or_none(v)
    if isinstance(v, (list, tuple)):
        return [_info_value(x) for x in v]
    try:
        return finite_or_none(float(v))
    except (TypeError, ValueError):
        return str(v)
