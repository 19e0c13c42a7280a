"""Experience layouts: where a trainer puts the prompt, the response and the per-token values.

The saver reads two layouts and writes the same records from both:

- ``"response"`` (this project, verl, OpenRLHF before 0.8.3): ``sequences`` (B, S) is
  [left-padded prompt | right-padded response]; ``action_mask`` and every per-token tensor are
  (B, A) and cover the last A columns of ``sequences``.
- ``"shifted"`` (upstream OpenRLHF 0.8.3 and newer): ``sequences`` (B, S) is
  [prompt | response | pad], right-padded; ``action_mask``, ``action_log_probs``, ``advantages``,
  ``returns`` (and our ``action_entropy``) are (B, S - 1), and column j belongs to the token
  ``sequences[:, j + 1]`` (the logits at position j are the distribution that token came from).
  OpenRLHF 0.10 moved ``response_length`` (and ``total_length``, ``truncated``, ``rewards``) from
  ``info`` to the experience itself; they are read from either place.

Detection (``layout="auto"``), per experience, from the shapes: A == S - 1 is "shifted",
0 <= A < S - 1 is "response", anything else is refused. The one overlap, a response-layout batch
whose prompts are all one token wide (A == S - 1 there too), maps every column to the same token
under both readings and gives the same records, so the rule cannot pick wrongly. Then the masks
are checked against the chosen layout (action tokens must be real tokens; in the response layout
no real token may sit before the first action token of the response columns, which is what an
upstream experience read as "response" looks like), and an experience that fails is refused with
an ``ExperienceLayoutError`` naming the shapes: never a record with the wrong texts.

The alternatives (``alternative_ids`` / ``alternative_log_probs``, (B, A, K)) are read in the
response layout only. Texts are lossless in both: every real token from the first action token on is part of the
response text. Tokens inside the response that were not sampled (a multi-turn rollout's tool
output, where ``action_mask`` has gaps) keep their text and get no entropy, log-prob or mark.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from openrlhf_ext.utils.tensors import masked_mean

LAYOUTS = ("auto", "response", "shifted")

# Per-token fields, laid out like action_mask in both layouts.
TOKEN_FIELDS = ("action_entropy", "action_log_probs", "rollout_log_probs", "advantages", "returns")
# Per-sample fields that OpenRLHF >= 0.10 keeps on the experience instead of in info.
EPISODE_INFO = {"rewards": "reward", "total_length": "total_length", "truncated": "truncated"}


class ExperienceLayoutError(ValueError):
    """An experience whose layout the saver cannot tell, or whose masks contradict its layout."""


def check_layout_name(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def detect_layout(exp, index: int = 0) -> str:
    """``"response"`` or ``"shifted"`` from the shapes of ``sequences`` and ``action_mask``.

    Example:
        >>> import torch, types
        >>> e = types.SimpleNamespace(sequences=torch.zeros(2, 9), action_mask=torch.zeros(2, 8))
        >>> detect_layout(e)
        'shifted'
        >>> detect_layout(types.SimpleNamespace(sequences=torch.zeros(2, 9), action_mask=torch.zeros(2, 5)))
        'response'
    """
    s_shape, a_shape = _shapes(exp, index)
    S, A = s_shape[1], a_shape[1]
    if A == S - 1:
        return "shifted"
    if 0 <= A < S - 1:
        return "response"
    raise ExperienceLayoutError(
        f"experience {index}: cannot tell its layout from sequences {s_shape} and action_mask {a_shape}; "
        f"expected action_mask (B, A) over the last A columns of sequences (A < S - 1: this project, verl) "
        f"or (B, S - 1) over sequences[:, 1:] (upstream OpenRLHF >= 0.8.3)"
    )


def as_response_layout(exp, layout: str = "auto", index: int = 0):
    """``exp`` in the response layout the saver works on, after checking it fits ``layout``.

    A response-layout experience is returned as it is; a shifted one is converted by
    ``shifted_to_response``. Raises ``ExperienceLayoutError`` (naming the shapes) otherwise.
    """
    check_layout_name(layout)
    found = detect_layout(exp, index) if layout == "auto" else layout
    s_shape, a_shape = _shapes(exp, index)
    fits = a_shape[1] == s_shape[1] - 1 if found == "shifted" else 0 <= a_shape[1] < s_shape[1]
    if not fits:
        want = "(B, S - 1)" if found == "shifted" else "(B, A) with A < S"
        raise ExperienceLayoutError(
            f"experience {index}: layout={layout!r} needs action_mask {want}, but sequences is {s_shape} "
            f"and action_mask {a_shape}"
        )
    _check_token_fields(exp, index)
    if found == "shifted":
        return shifted_to_response(exp, index)
    _check_response_masks(exp, index)
    return exp


def shifted_to_response(exp, index: int = 0) -> SimpleNamespace:
    """An upstream OpenRLHF (>= 0.8.3) experience in the response layout, as a namespace with the
    attributes the saver reads. P is the widest prompt, A the widest response of the batch.

    Example:
        >>> import torch, types
        >>> e = types.SimpleNamespace(                    # prompt 5 6 7, response 8 9, one pad
        ...     sequences=torch.tensor([[5, 6, 7, 8, 9, 0]]), attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]),
        ...     action_mask=torch.tensor([[0, 0, 1, 1, 0]]), info={})
        >>> r = shifted_to_response(e)
        >>> r.sequences.tolist(), r.action_mask.tolist()
        ([[5, 6, 7, 8, 9]], [[True, True]])
    """
    seqs = exp.sequences.detach().cpu()  # (B, S) [prompt | response | pad]
    B, S = seqs.shape
    attn = getattr(exp, "attention_mask", None)
    real = torch.ones(B, S, dtype=torch.bool) if attn is None else attn.detach().cpu().bool()  # (B, S)
    action = torch.zeros(B, S, dtype=torch.bool)  # (B, S) true where sequences[:, j] was sampled
    action[:, 1:] = exp.action_mask.detach().cpu().bool()
    if (action & ~real).any():
        raise ExperienceLayoutError(
            f"experience {index}: action_mask {tuple(exp.action_mask.shape)} marks padding of sequences "
            f"{(B, S)} (attention_mask 0) when read as the shifted layout (column j = sequences[:, j + 1])"
        )
    pos = torch.arange(S)  # (S,)
    first = torch.where(action.any(1), action.float().argmax(1), torch.full((B,), S))  # (B,) first action column
    in_prompt = real & (pos < first[:, None])  # (B, S) real tokens before the first action token
    in_resp = real & (pos >= first[:, None])  # (B, S) real tokens from the first action token on
    P = int(in_prompt.sum(1).max()) if B else 0  # widest prompt
    A = int(in_resp.sum(1).max()) if B else 0  # widest response
    prompt_ids, prompt_real = _pack(seqs, in_prompt, P, fill=0, left=True)  # (B, P) left-padded
    resp_ids, resp_real = _pack(seqs, in_resp, A, fill=0)  # (B, A) right-padded

    def per_token(name):  # (B, S - 1) -> (B, A), NaN where no token was sampled (everywhere when missing)
        values = getattr(exp, name, None)
        if values is None:
            return torch.full((B, A), float("nan"))
        full = torch.full((B, S), float("nan"))  # (B, S) value of the token at each sequence column
        full[:, 1:] = nan_unless_sampled(values, exp.action_mask)
        return _pack(full, in_resp, A, fill=float("nan"))[0]

    def per_sample_mean(name):  # (B, S - 1) -> (B,) mean over the sampled tokens; (B,) as it is
        values = getattr(exp, name, None)
        if values is None:
            return None
        values = values.detach().float().cpu()
        if values.dim() == 1:  # already per sample
            return values
        return masked_mean(values, exp.action_mask.detach().cpu(), dim=-1)

    info = dict(getattr(exp, "info", None) or {})
    for attr, key in EPISODE_INFO.items():
        if getattr(exp, attr, None) is not None and key not in info:
            info[key] = getattr(exp, attr)
    return SimpleNamespace(
        sequences=torch.cat([prompt_ids, resp_ids], 1),  # (B, P + A)
        attention_mask=torch.cat([prompt_real, resp_real], 1),  # (B, P + A)
        action_mask=resp_real,  # (B, A) every real response token: texts stay whole
        action_entropy=per_token("action_entropy"),  # (B, A)
        action_log_probs=per_token("action_log_probs"),  # (B, A)
        # (B, A) the rollout engine's log-probs (upstream's --enable_vllm_is_correction), when it kept them
        rollout_log_probs=None if getattr(exp, "rollout_log_probs", None) is None else per_token("rollout_log_probs"),
        advantages=per_sample_mean("advantages"),  # (B,)
        returns=per_sample_mean("returns"),  # (B,)
        info=info,
        group_index=getattr(exp, "group_index", None),
        labels=getattr(exp, "labels", None) or None,
        prompts=getattr(exp, "prompts", None) or None,
    )


def nan_unless_sampled(values, sampled: torch.Tensor):
    """Per-token ``values`` as the saver keeps them: detached, float32, on the CPU, NaN wherever
    ``sampled`` (same shape, true on the tokens the rollout sampled) is false. None stays None.

    Example:
        >>> nan_unless_sampled(torch.tensor([[1, 2, 3]], dtype=torch.bfloat16), torch.tensor([[1, 0, 1]]))
        tensor([[1., nan, 3.]])
        >>> nan_unless_sampled(None, torch.tensor([[True]])) is None
        True
    """
    if values is None:
        return None
    return values.detach().float().cpu().masked_fill(~sampled.detach().cpu().bool(), float("nan"))


def _pack(x: torch.Tensor, keep: torch.Tensor, width: int, fill, left: bool = False):
    """The ``keep`` entries of each row of ``x`` (B, S), in order, in a (B, width) tensor padded
    on the left or the right; returns (packed, filled) where ``filled`` marks the kept entries."""
    B = x.shape[0]
    count = keep.sum(1)  # (B,)
    col = keep.long().cumsum(1) - 1  # (B, S) place of each kept entry in its row
    if left:
        col = col + (width - count)[:, None]
    rows, src = keep.nonzero(as_tuple=True)
    packed = torch.full((B, width), fill, dtype=x.dtype)
    filled = torch.zeros(B, width, dtype=torch.bool)
    packed[rows, col[rows, src]] = x[rows, src]
    filled[rows, col[rows, src]] = True
    return packed, filled


def _shapes(exp, index: int):
    seqs, amask = getattr(exp, "sequences", None), getattr(exp, "action_mask", None)
    if seqs is None or amask is None:
        raise ExperienceLayoutError(f"experience {index} has no {'sequences' if seqs is None else 'action_mask'}")
    s_shape, a_shape = tuple(seqs.shape), tuple(amask.shape)
    if len(s_shape) != 2 or len(a_shape) != 2 or s_shape[0] != a_shape[0]:
        raise ExperienceLayoutError(
            f"experience {index}: sequences {s_shape} and action_mask {a_shape} must both be (B, ...) "
            f"with the same B (packed or unbatched experiences are not read)"
        )
    return s_shape, a_shape


def _check_token_fields(exp, index: int) -> None:
    a_shape = tuple(exp.action_mask.shape)
    for name in TOKEN_FIELDS:
        value = getattr(exp, name, None)
        if value is None:
            continue
        shape = tuple(value.shape)
        if shape != a_shape and not (name in ("advantages", "returns") and shape == a_shape[:1]):
            raise ExperienceLayoutError(
                f"experience {index}: {name} is {shape} but action_mask is {a_shape}; per-token values "
                f"must be laid out like action_mask"
            )


def _check_response_masks(exp, index: int) -> None:
    """Response layout: action tokens are real, and the response columns start with one."""
    amask = exp.action_mask.detach().cpu().bool()  # (B, A)
    B, A = amask.shape
    attn = getattr(exp, "attention_mask", None)
    if attn is None or A == 0:
        return
    real = attn.detach().cpu().bool()[:, attn.shape[1] - A :]  # (B, A) real tokens of the response columns
    if (amask & ~real).any():
        raise ExperienceLayoutError(
            f"experience {index}: action_mask {(B, A)} marks padding (attention_mask 0) in the last {A} "
            f"columns of sequences {tuple(exp.sequences.shape)}"
        )
    first = torch.where(amask.any(1), amask.float().argmax(1), torch.full((B,), A))  # (B,)
    before = real & (torch.arange(A) < first[:, None]) & amask.any(1, keepdim=True)  # (B, A)
    if before.any():
        row = int(before.any(1).nonzero()[0])
        raise ExperienceLayoutError(
            f"experience {index}: row {row} has real tokens before its first action token in the last {A} "
            f"columns of sequences {tuple(exp.sequences.shape)}: that is not a [prompt | response] batch with "
            f"action_mask {(B, A)} (an upstream OpenRLHF experience is laid out with action_mask (B, S - 1): "
            f"layout='shifted')"
        )
