"""``openrlhf-traj``: check and summarise trajectory files from the command line.

    openrlhf-traj validate runs/demo/trajectories     # every problem, by file / record / field
    openrlhf-traj stats runs/demo/trajectories        # one line per step, plus its fork words
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .files import read_manifest, resolve_step_files
from .schema import parse_json_file, validate_records
from .stats import entropy_summary


def cmd_validate(args) -> int:
    try:
        files = resolve_step_files(args.path)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_records, problems = 0, []
    for file in files:
        data, parse_problems = parse_json_file(file)
        problems.extend(parse_problems)
        if data is not None:
            problems.extend(validate_records(data, str(file)))
            n_records += len(data) if isinstance(data, list) else 0
    folder = files[0].parent
    manifest = folder / "manifest.jsonl"
    if len(files) > 1 or manifest.exists():
        for entry in read_manifest(manifest):
            name = entry.get("file")
            if isinstance(name, str) and not (folder / Path(name).name).exists():
                problems.append(f"{manifest}: step {entry.get('global_step')}: lists {name}, which is missing")
    for p in problems:
        print(p)
    if problems:
        print(f"INVALID: {len(problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"OK: {len(files)} file(s), {n_records} record(s)")
    return 0


def step_rows(path, top_words: int = 5) -> list[dict]:
    """One dict per step file: what ``stats`` prints. The manifest (when it is ours) gives
    the whole step's numbers; otherwise they come from the saved records alone."""
    files = resolve_step_files(path)
    manifest = {e.get("global_step"): e for e in read_manifest(files[0].parent / "manifest.jsonl")}
    rows = []
    for file in files:
        data, problems = parse_json_file(file)
        if not isinstance(data, list):
            rows.append({"file": file.name, "error": str(problems[0]) if problems else "not a list"})
            continue
        records = [r for r in data if isinstance(r, dict)]
        step = next((r.get("global_step") for r in records if isinstance(r.get("global_step"), int)), None)
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
        m = manifest.get(step) if isinstance(manifest.get(step), dict) else {}
        ent = m.get("entropy") if isinstance(m.get("entropy"), dict) else entropy_summary(np.array(ents))
        rows.append(
            {
                "step": step,
                "file": file.name,
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
        )
    return rows


def _fmt(x, width=8):
    if x is None:
        return "-".rjust(width)
    if isinstance(x, float):
        return f"{x:.3f}".rjust(width)
    return str(x).rjust(width)


def cmd_stats(args) -> int:
    try:
        rows = step_rows(args.path, top_words=args.top)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        return 0
    cols = ["step", "responses", "saved", "tokens", "mean_entropy", "threshold", "p50", "p80", "p95", "reward_mean"]
    heads = ["step", "resp", "saved", "tokens", "H mean", "thresh", "p50", "p80", "p95", "reward"]
    print(" ".join(h.rjust(8) for h in heads) + "  fork words (count)")
    for row in rows:
        if "error" in row:
            print(f"{row['file']}: {row['error']}")
            continue
        words = ", ".join(f"{w} ({c})" for w, c in row["fork_words"])
        print(" ".join(_fmt(row[c]) for c in cols) + "  " + words)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openrlhf-traj",
        description="Check, summarise, share and convert trajectory files (FORMAT.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check files against the format; exit 1 when any problem is found")
    v.add_argument("path", help="a trajectories_step_N.json file, a trajectories folder, or a run's save_path")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("stats", help="a per-step table: entropy, threshold, percentiles, reward, fork words")
    s.add_argument("path", help="a trajectories_step_N.json file, a trajectories folder, or a run's save_path")
    s.add_argument("--top", type=int, default=5, help="fork words shown per step (default 5)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(func=cmd_stats)
    for module in ("report", "convert"):
        _register_optional(sub, module)
    return parser


def _register_optional(sub, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.{module}":
            raise
        return
    mod.add_parser(sub)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `openrlhf-traj stats DIR | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
