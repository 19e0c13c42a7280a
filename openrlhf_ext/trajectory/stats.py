"""Step statistics of token entropies: what the manifest records and the trainer logs."""
from __future__ import annotations

import numpy as np

HIST_BINS = 30


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
