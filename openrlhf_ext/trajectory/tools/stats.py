"""The table of ``openrlhf-traj stats``: one row per step file, from the manifest when it is ours
and from the saved records otherwise.

Files may come from other tools: nothing here trusts a type, and a file that cannot be read is a
row with its error, not a crash.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..files import MANIFEST_FILE, read_manifest
from ..format import parse_json_file, resolve_step_files
from ..manifest_entry import entropy_summary

COLUMNS = ("step", "responses", "saved", "tokens", "mean_entropy", "threshold", "p50", "p80", "p95", "reward_mean")
HEADINGS = ("step", "resp", "saved", "tokens", "H mean", "thresh", "p50", "p80", "p95", "reward")


def step_rows(path, top_words: int = 5) -> list[dict]:
    """One dict per step file: what ``stats`` prints. The manifest (when it is ours) gives
    the whole step's numbers; otherwise they come from the saved records alone.

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
    manifest = {e.get("global_step"): e for e in read_manifest(files[0].parent / MANIFEST_FILE)}
    rows = []
    for file in files:
        data, problems = parse_json_file(file)
        if not isinstance(data, list):
            rows.append({"file": file.name, "error": str(problems[0]) if problems else "not a list"})
            continue
        records = [r for r in data if isinstance(r, dict)]
        step = next((r.get("global_step") for r in records if isinstance(r.get("global_step"), int)), None)
        m = manifest.get(step) if isinstance(manifest.get(step), dict) else {}
        rows.append(_row(file.name, step, records, m, top_words))
    return rows


def _row(name: str, step, records: list[dict], m: dict, top_words: int) -> dict:
    ents, words, rewards, n_tokens, thresholds = [], Counter(), [], 0, []
    for r in records:
        tokens = r.get("pure_generated_tokens") if isinstance(r.get("pure_generated_tokens"), list) else []
        for t in tokens:
            if not isinstance(t, dict):
                continue
            n_tokens += 1
            s = t.get("entropy_score")
            if isinstance(s, (int, float)) and not isinstance(s, bool):
                ents.append(float(s))
            if t.get("high_entropy") is True and isinstance(t.get("text"), str):
                words[t["text"].strip() or repr(t["text"])] += 1
        info = r.get("info") if isinstance(r.get("info"), dict) else {}
        if isinstance(info.get("reward"), (int, float)):
            rewards.append(float(info["reward"]))
        if isinstance(r.get("high_entropy_threshold"), (int, float)):
            thresholds.append(float(r["high_entropy_threshold"]))
    ent = m.get("entropy") if isinstance(m.get("entropy"), dict) else entropy_summary(np.array(ents))
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
        "reward_mean": m.get("reward_mean", float(np.mean(rewards)) if rewards else None),
        "fork_words": words.most_common(top_words),
    }


def _cell(x, width=8) -> str:
    if x is None:
        return "-".rjust(width)
    if isinstance(x, float):
        return f"{x:.3f}".rjust(width)
    return str(x).rjust(width)


def format_table(rows: list[dict]) -> list[str]:
    """The lines ``stats`` prints: a heading, then one line per row (its error, for a broken file)."""
    lines = [" ".join(h.rjust(8) for h in HEADINGS) + "  fork words (count)"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['file']}: {row['error']}")
            continue
        words = ", ".join(f"{w} ({c})" for w, c in row["fork_words"])
        lines.append(" ".join(_cell(row[c]) for c in COLUMNS) + "  " + words)
    return lines
