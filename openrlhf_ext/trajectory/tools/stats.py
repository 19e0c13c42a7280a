"""The table of ``openrlhf-traj stats``: one row per step file, from the manifest when it is ours
and from the saved records otherwise. The train-inference mismatch columns (|logprob -
rollout_logprob|, mean and p95) are shown when some step has them.

Files may come from other tools: they are read as the viewer reads them (``read_lenient``), the
manifest through the bounded reader, and a file that cannot be read is a row with its error, not
a crash.
"""
from __future__ import annotations

import numpy as np

from ..files import list_probe_files
from ..format import Problem, read_lenient_files, read_manifest_entries, resolve_step_files
from ..format.reading import probe_problems
from ..format.schema import writable_text
from ..manifest_entry import entropy_summary, record_fork_words, record_mismatch

COLUMNS = ("step", "responses", "saved", "tokens", "mean_entropy", "threshold", "p50", "p80", "p95", "reward_mean")
HEADINGS = ("step", "resp", "saved", "tokens", "H mean", "thresh", "p50", "p80", "p95", "reward")
MISMATCH_COLUMNS = ("mismatch_mean", "mismatch_p95")  # shown when some step has rollout log-probs
MISMATCH_HEADINGS = ("mismatch", "mism p95")  # |logprob - rollout_logprob|


def step_rows(path, top_words: int = 5, notices: list[Problem] | None = None) -> list[dict]:
    """One dict per step file: what ``stats`` prints. The manifest (when it is ours) gives
    the whole step's numbers; otherwise they come from the saved records alone. What the viewer
    would note about a file (and an unreadable manifest) goes into ``notices`` when given.

    Example:
        >>> import tempfile
        >>> from openrlhf_ext.trajectory.files import write_records
        >>> folder = tempfile.mkdtemp()
        >>> tokens = [{"text": " yes", "high_entropy": True, "entropy_score": 2.0},
        ...           {"text": ".", "high_entropy": False, "entropy_score": 0.5}]
        >>> write_records(f"{folder}/trajectories_step_4.json",
        ...               [{"global_step": 4, "pure_generated_tokens": tokens, "info": {"reward": 1.0}}])
        1
        >>> row = step_rows(folder)[0]
        >>> row["step"], row["tokens"], row["mean_entropy"], row["fork_words"]
        (4, 2, 1.25, [('yes', 1)])
    """
    files = resolve_step_files(path)
    entries, manifest_problems = read_manifest_entries(files[0].parent)
    manifest = {e["global_step"]: e for e in entries
                if isinstance(e.get("global_step"), int) and not isinstance(e["global_step"], bool)}
    if notices is not None:
        notices.extend(manifest_problems)
        probes = [p.name for _, p in list_probe_files(files[0].parent)]
        notices.extend(probe_problems(files[0].parent, entries, probes))
    rows = []
    for file, read, problem in read_lenient_files(files):
        name = writable_text(file.name)  # a name that is not UTF-8 is printed and written as JSON too
        if read is None:
            rows.append({"file": name, "error": problem.message})
            continue
        if notices is not None:
            notices.extend(read.notices)
        step = read.steps[0] if read.steps else read.step
        rows.append(_row(name, step, read.records, manifest.get(step, {}), top_words))
    return rows


def _row(name: str, step, records: list[dict], m: dict, top_words: int) -> dict:
    ents, rewards, n_tokens, thresholds = [], [], 0, []
    for r in records:  # FORMAT.md records (read_lenient): the types are the format's
        for t in r["pure_generated_tokens"]:
            n_tokens += 1
            if t["entropy_score"] is not None:
                ents.append(float(t["entropy_score"]))
        if r["info"]["reward"] is not None:
            rewards.append(float(r["info"]["reward"]))
        if r.get("high_entropy_threshold") is not None:
            thresholds.append(float(r["high_entropy_threshold"]))
    with np.errstate(all="ignore"):  # 1e308 entropies overflow the mean to inf: shown as such, not warned
        ent = m.get("entropy") if isinstance(m.get("entropy"), dict) else entropy_summary(np.array(ents))
        reward_mean = float(np.mean(rewards)) if rewards else None
        mismatch = m.get("logprob_mismatch") if isinstance(m.get("logprob_mismatch"), dict) else record_mismatch(records)
    return {
        "step": step,
        "file": name,
        "responses": m.get("num_responses", len(records)),
        "saved": len(records),
        "tokens": m.get("num_response_tokens", n_tokens),
        "mean_entropy": ent.get("mean"),
        "threshold": m.get("high_entropy_threshold", thresholds[0] if thresholds else None),
        "p50": ent.get("p50"),
        "p80": ent.get("p80"),
        "p95": ent.get("p95"),
        "reward_mean": m.get("reward_mean", reward_mean),
        "mismatch_mean": (mismatch or {}).get("mean_abs"),
        "mismatch_p95": (mismatch or {}).get("p95_abs"),
        # the whole step's fork words (the manifest's), else the saved records'
        "fork_words": _manifest_words(m.get("fork_words"), top_words)
        or [tuple(wc) for wc in record_fork_words(records, top_words) or []],
    }


def _manifest_words(value, top: int) -> list[tuple] | None:
    """The manifest's ``fork_words`` ([[word, count], ...]) when they are that, the first ``top``."""
    if not isinstance(value, list):
        return None
    words = [(w, c) for w, c in (x for x in value if isinstance(x, list) and len(x) == 2)
             if isinstance(w, str) and isinstance(c, int) and not isinstance(c, bool)]
    return words[:top] if words else None


def _cell(x, width=8) -> str:
    if x is None:
        return "-".rjust(width)
    if isinstance(x, float):
        return (f"{x:.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:.1e}").rjust(width)
    return str(x)[:40].rjust(width)  # a manifest from anywhere may hold anything here


def format_table(rows: list[dict]) -> list[str]:
    """The lines ``stats`` prints: a heading, then one line per row (its error, for a broken file).
    The mismatch columns come when a row has them."""
    mismatch = any(row.get("mismatch_mean") is not None for row in rows)
    columns = COLUMNS + (MISMATCH_COLUMNS if mismatch else ())
    headings = HEADINGS + (MISMATCH_HEADINGS if mismatch else ())
    lines = [" ".join(h.rjust(8) for h in headings) + "  fork words (count)"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['file']}: {row['error']}")
            continue
        words = ", ".join(f"{w} ({c})" for w, c in row["fork_words"])
        lines.append(" ".join(_cell(row.get(c)) for c in columns) + "  " + words)
    return lines
