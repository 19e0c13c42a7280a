"""One step's line of manifest.jsonl (FORMAT.md), built here for the saver and the converters
alike, with the numbers that sum up the step's token entropies, its fork words and its
train-inference mismatch (also what the trainer logs).

Example:
    >>> entry = manifest_entry(3, num_responses=2, num_saved=1, entropies=[0.5, 1.5, float("nan")],
    ...                        rewards=[1.0, None], ratio=0.2, threshold=1.5)
    >>> entry["file"], entry["num_response_tokens"], entry["entropy"]["mean"], entry["reward_mean"]
    ('trajectories_step_3.json', 3, 1.0, 1.0)
"""
from __future__ import annotations

import numpy as np

from .files import finite_or_none, step_file_name, utc_now

HIST_BINS = 30
MAX_FORK_WORDS = 50  # FORMAT.md: the manifest's fork_words hold at most 50 texts


def manifest_entry(
    global_step: int,
    *,
    num_responses: int,
    num_saved: int,
    entropies,
    rewards,
    ratio: float | None,
    threshold,
    num_response_tokens: int | None = None,
    file_bytes: int | None = None,
    fork_words: list | None = None,
    logprob_mismatch: dict | None = None,
    probe_file: str | None = None,
    **extra,
) -> dict:
    """The manifest entry of step ``global_step``, whose file is ``step_file_name(global_step)``.

    Args:
        num_responses: responses of the whole step; ``num_saved``: how many its file holds.
        entropies: the entropy of every response token of the whole step (any shape; values that
            are not finite are left out of the statistics), or None when the trace has none.
        rewards: one reward per response (None or non-finite where unknown), or None.
        ratio, threshold: the high-entropy mark's ratio and the step's threshold (None when the
            step is not marked or has one threshold per response).
        num_response_tokens: default: the number of ``entropies``.
        file_bytes, fork_words, logprob_mismatch, probe_file: the version 2 keys, written when
            given: the step file's size, ``count_fork_words``' list, ``mismatch_summary``'s dict
            and the name of the step's probe file.
        extra: more keys, written after the format's (``save_seconds``, ``converted_from``).
    """
    values = None if entropies is None else np.asarray(entropies, dtype=np.float64).ravel()
    if num_response_tokens is None:
        num_response_tokens = 0 if values is None else values.size
    reward_values = np.asarray([] if rewards is None else rewards, dtype=np.float64).ravel()
    reward_values = reward_values[np.isfinite(reward_values)]
    return {
        "global_step": int(global_step),
        "file": step_file_name(global_step),
        "num_responses": int(num_responses),
        "num_saved": int(num_saved),
        "num_response_tokens": int(num_response_tokens),
        "high_entropy_token_ratio": ratio,
        "high_entropy_threshold": finite_or_none(threshold),
        "entropy": None if values is None else entropy_summary(values),
        **entropy_histogram(values if values is not None else []),
        "reward_mean": float(reward_values.mean()) if reward_values.size else None,
        "created_at": utc_now(),
        **{k: v for k, v in (("file_bytes", file_bytes), ("fork_words", fork_words),
                             ("logprob_mismatch", logprob_mismatch), ("probe_file", probe_file)) if v is not None},
        **extra,
    }


def mismatch_summary(log_probs, rollout_log_probs) -> dict | None:
    """``mean_abs``, ``p95_abs``, ``max_abs`` of ``log_probs - rollout_log_probs`` over the tokens
    where both are finite (any shapes that match: the step's response tokens), or None when there
    is no such token. The train-inference mismatch of the manifest and of the step's log line.

    Example:
        >>> mismatch_summary([-0.5, -1.0, -2.0], [-0.5, -1.25, float("nan")])
        {'mean_abs': 0.125, 'p95_abs': 0.2375, 'max_abs': 0.25}
    """
    a = np.asarray(log_probs, dtype=np.float64).ravel()
    b = np.asarray(rollout_log_probs, dtype=np.float64).ravel()
    diff = np.abs(a - b)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return None
    return {"mean_abs": float(diff.mean()), "p95_abs": float(np.percentile(diff, 95)), "max_abs": float(diff.max())}


def fork_word(text: str) -> str:
    """How a high-entropy token's text is counted as a fork word: stripped of surrounding
    whitespace (" Wait" and "Wait" are one word), or its repr when it is whitespace only.

    Example:
        >>> fork_word(" Wait"), fork_word(" ")
        ('Wait', "' '")
    """
    return text.strip() or repr(text)


def count_fork_words(texts, counts, top: int = MAX_FORK_WORDS) -> list[list]:
    """``[[word, count], ...]``, most frequent first (ties by word), at most ``top``: the fork words
    of texts that occur ``counts`` times each (one per distinct token id, as ``numpy.unique`` gives
    them), merged by ``fork_word``.

    Example:
        >>> count_fork_words([" Wait", "Wait", " So"], [3, 1, 2])
        [['Wait', 4], ['So', 2]]
    """
    merged: dict[str, int] = {}
    for text, count in zip(texts, counts):
        word = fork_word(text)
        merged[word] = merged.get(word, 0) + int(count)
    return [[w, c] for w, c in sorted(merged.items(), key=lambda wc: (-wc[1], wc[0]))[:top]]


def record_fork_words(records, top: int = MAX_FORK_WORDS) -> list[list] | None:
    """``fork_words`` of FORMAT.md records: their high-entropy tokens' texts counted as
    ``count_fork_words`` counts them, or None when no token is marked. What a manifest line and
    ``stats`` give for step files that came without the whole step's counts.

    Example:
        >>> tokens = [{"text": " Wait", "high_entropy": True}, {"text": ",", "high_entropy": False}]
        >>> record_fork_words([{"pure_generated_tokens": tokens}] * 2)
        [['Wait', 2]]
    """
    counts: dict[str, int] = {}
    for r in records:
        for t in r["pure_generated_tokens"]:
            if t["high_entropy"]:
                counts[t["text"]] = counts.get(t["text"], 0) + 1
    return count_fork_words(counts, counts.values(), top) or None


def record_mismatch(records) -> dict | None:
    """``mismatch_summary`` over the tokens of FORMAT.md records that carry both ``logprob`` and
    ``rollout_logprob``; None when none does.

    Example:
        >>> tokens = [{"logprob": -1.0, "rollout_logprob": -1.5}, {"logprob": -2.0}]
        >>> record_mismatch([{"pure_generated_tokens": tokens}])
        {'mean_abs': 0.5, 'p95_abs': 0.5, 'max_abs': 0.5}
    """
    pairs = [(t["logprob"], t["rollout_logprob"]) for r in records for t in r["pure_generated_tokens"]
             if "logprob" in t and "rollout_logprob" in t]
    if not pairs:
        return None
    log_probs, rollout_log_probs = zip(*pairs)
    return mismatch_summary(log_probs, rollout_log_probs)


def entropy_summary(values) -> dict:
    """mean, std, min, max, p50, p80, p95 of the finite values (all None when there are none).

    Example:
        >>> entropy_summary(np.array([0.0, 1.0, 2.0, np.nan]))["mean"]
        1.0
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    keys = ("mean", "std", "min", "max", "p50", "p80", "p95")
    if v.size == 0:
        return dict.fromkeys(keys)
    p50, p80, p95 = np.percentile(v, [50, 80, 95])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "p50": float(p50),
        "p80": float(p80),
        "p95": float(p95),
    }


def entropy_histogram(values, bins: int = HIST_BINS) -> dict:
    """``hist_edges`` (bins + 1) and ``hist_counts`` (bins) over the finite values' range."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"hist_edges": [], "hist_counts": []}
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return {"hist_edges": edges.tolist(), "hist_counts": counts.tolist()}
