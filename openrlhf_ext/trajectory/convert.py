"""`openrlhf-traj convert`: other tools' traces (and our own npz traces) into trajectory files.

    openrlhf-traj convert SRC -o OUT_DIR [--tokenizer PATH] [--high_entropy_token_ratio 0.2]
                          [--num_trajectories_per_step N] [--steps 1,5,10-20]

SRC is detected by what it holds:
- `steps/step_NNNNNN.npz` (or a folder of those): an entropy trace, ours (--save_entropy_trace) or
  another trainer's. Token ids are decoded with --tokenizer (default: the tokenizer path in SRC's
  summary.json when it is ours and that path exists) and tokens are marked high-entropy over all
  responses of the step, as FORMAT.md defines (`high_entropy_mask`).
- `*.jsonl` files of rollout lines with `input`, `output`, `score`, `step`: text only, no entropy;
  the viewer shows them unmarked.

OUT_DIR gets `trajectories_step_N.json`, `manifest.jsonl` and `summary.json` of FORMAT.md, each
written atomically. Conversion streams: one step's arrays and records are alive at a time, and a
step's records are serialised one by one, so memory is bounded by the largest step's output.

Example:
    >>> from openrlhf_ext.trajectory.convert import convert
    >>> convert("runs/exp1/trajectories", "runs/exp1/all_responses", tokenizer="Qwen/Qwen2.5-0.5B",
    ...         num_trajectories_per_step=64)  # doctest: +SKIP
    {'kind': 'npz', 'steps': [1, 2, ...], 'out_dir': 'runs/exp1/all_responses'}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from openrlhf_ext import __version__
from openrlhf_ext.trajectory.convert_jsonl import (
    find_jsonl_files,
    jsonl_step_records,
    looks_like_rollout_jsonl,
    read_jsonl_steps,
    word_chunks,
)
from openrlhf_ext.trajectory.convert_npz import (
    ConvertError,
    find_npz_steps,
    npz_step_records,
    npz_step_stats,
    npz_steps_dir,
    read_npz_step,
)
from openrlhf_ext.trajectory.files import step_file_name, upsert_manifest, utc_now, write_records, write_summary
from openrlhf_ext.trajectory.report import parse_steps
from openrlhf_ext.trajectory.sampling import SAMPLING_MODES, choose_responses

__all__ = ["convert", "detect_source", "load_tokenizer", "ConvertError", "add_parser"]


# ----------------------------------------------------------------------------- detection

def detect_source(src: str | Path) -> str:
    """"npz" or "jsonl" for what `src` holds; ConvertError saying what was expected otherwise."""
    src = Path(src)
    if not src.exists():
        raise ConvertError(f"{src}: no such file or folder")
    if src.is_dir() and npz_steps_dir(src) is not None:
        return "npz"
    if src.is_file() and src.suffix == ".npz":
        raise ConvertError(f"{src}: give the folder that holds the steps/step_NNNNNN.npz files, not one file")
    jsonl = find_jsonl_files(src)
    if jsonl and looks_like_rollout_jsonl(jsonl[0]):
        return "jsonl"
    raise ConvertError(
        f"{src}: not a known trace: expected steps/step_NNNNNN.npz files (an entropy trace) or "
        f"*.jsonl files whose lines have input, output, score, step (rollout dumps)"
    )


# ----------------------------------------------------------------------------- tokenizer

def load_tokenizer(path: str | Path):
    """A tokenizer from a tokenizer.json file, a local folder, or a name transformers can load."""
    path_obj = Path(path)
    if path_obj.is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(path_obj))
        except Exception as error:  # tokenizers raises a bare Exception on a bad file
            raise ConvertError(f"{path}: cannot load a tokenizer from this file: {error}") from error
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as error:
        if (path_obj / "tokenizer.json").is_file():
            return load_tokenizer(path_obj / "tokenizer.json")
        raise ConvertError(f"{path}: cannot load a tokenizer: {error}") from error


def _summary_tokenizer(src: Path) -> tuple[str | None, str | None]:
    """(usable path, name) of the tokenizer our own summary.json records for SRC.

    Only a format_version 1 summary (ours) is trusted: other trainers' (format_version 2) carry
    other fields. The path is usable when it exists here; a hub name is returned as `name` only,
    so that nothing is downloaded unless the user passes it with --tokenizer."""
    folder = src.parent if src.name == "steps" else src
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(summary, dict) or summary.get("format_version") != 1:
        return None, None
    for key in ("tokenizer", "model"):
        value = summary.get(key)
        if isinstance(value, str) and value:
            return (value if Path(value).exists() else None), value
    return None, None


def _steps_of(kind: str, src: Path, wanted: set[int] | None):
    """Yield (global_step, label, load) per step, lazily: `load()` reads that step only."""
    if kind == "npz":
        for global_step, path in find_npz_steps(npz_steps_dir(src)):
            if wanted is None or global_step in wanted:
                yield global_step, path.name, (lambda p=path, s=global_step: read_npz_step(p, s))
        return
    seen: dict[int, Path] = {}
    for path in find_jsonl_files(src):
        for global_step, rows in read_jsonl_steps(path):
            if global_step in seen:
                raise ConvertError(
                    f"{path}: step {global_step} was already read from {seen[global_step]}; "
                    "one step's lines must be in one file"
                )
            seen[global_step] = path
            if wanted is None or global_step in wanted:
                yield global_step, path.name, (lambda r=rows: r)


def convert(
    src: str | Path,
    out_dir: str | Path,
    tokenizer=None,
    high_entropy_token_ratio: float = 0.2,
    high_entropy_scope: str = "step",
    num_trajectories_per_step: int | None = None,
    steps: str | set[int] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    sampling: str = "first",
    seed: int = 42,
) -> dict:
    """Convert SRC (npz entropy trace or rollout JSONL) into trajectory files in `out_dir`.

    `tokenizer`: a tokenizer object or a path (npz only; default: the one our summary.json names).
    Returns {"kind", "steps", "out_dir"}. Raises ConvertError naming the file on broken input.
    """
    src, out_dir = Path(src), Path(out_dir)
    kind = detect_source(src)
    if not 0 < high_entropy_token_ratio <= 1:
        raise ConvertError(f"--high_entropy_token_ratio must be in (0, 1], got {high_entropy_token_ratio}")
    if high_entropy_scope not in ("step", "response"):
        raise ConvertError(f"--high_entropy_scope must be step or response, got {high_entropy_scope!r}")
    if num_trajectories_per_step is not None and num_trajectories_per_step < 1:
        raise ConvertError("--num_trajectories_per_step must be at least 1")
    wanted = parse_steps(steps) if isinstance(steps, str) or steps is None else set(steps)

    tokenizer_path = None
    if kind == "npz":
        if tokenizer is None:
            tokenizer, named = _summary_tokenizer(src)
            if tokenizer is None:
                hint = f" (summary.json names {named!r}, which is not a local path here)" if named else ""
                raise ConvertError(
                    f"{src}: an npz trace holds token ids; pass --tokenizer PATH (the model's "
                    f"tokenizer folder, tokenizer.json or hub name) to decode them{hint}"
                )
        if isinstance(tokenizer, (str, Path)):
            tokenizer_path = str(tokenizer)
            tokenizer = load_tokenizer(tokenizer)

    manifest = out_dir / "manifest.jsonl"
    if manifest.exists() and not overwrite:
        raise ConvertError(
            f"{out_dir}: already holds trajectory files (manifest.jsonl); pass --overwrite to "
            "replace the steps converted now (the manifest keeps one entry per step)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)

    plan = list(_steps_of(kind, src, wanted)) if kind == "npz" else _steps_of(kind, src, wanted)
    created_at = utc_now()
    written: list[int] = []
    bar = tqdm(plan, desc=f"convert {kind}", unit="step", disable=(None if progress is None else not progress))
    for global_step, label, load in bar:
        bar.set_postfix_str(label)
        data = load()  # this step only
        if kind == "npz":
            records, step_info = npz_step_records(
                data, tokenizer, high_entropy_token_ratio, high_entropy_scope, num_trajectories_per_step,
                sampling=sampling, seed=seed,
            )
            stats = npz_step_stats(data)
        else:
            if num_trajectories_per_step is not None:  # the saver's choice: groups share an input
                scores = [r["score"] if isinstance(r.get("score"), (int, float)) else np.nan for r in data]
                chosen = choose_responses([r["input"] for r in data], scores, num_trajectories_per_step,
                                          sampling, seed=seed + global_step, forks=[0] * len(data))
                data = [data[i] for i in chosen]
            records, step_info = jsonl_step_records(global_step, data, None)
            stats = {"num_response_tokens": sum(len(word_chunks(r["output"])) for r in data),
                     "entropy": None, "hist_edges": [], "hist_counts": []}
        name = step_file_name(global_step)
        # write_records serialises each record before the next is built: one record alive at a time
        num_saved = write_records(out_dir / name, records)
        rewards = [r for r in step_info["rewards"] or [] if r is not None and np.isfinite(r)]
        upsert_manifest(manifest, {
            "global_step": global_step,
            "file": name,
            "num_responses": step_info["num_responses"],
            "num_saved": num_saved,
            "num_response_tokens": stats["num_response_tokens"],
            "high_entropy_token_ratio": high_entropy_token_ratio if kind == "npz" else None,
            "high_entropy_threshold": step_info["threshold"],
            "entropy": stats["entropy"],
            "hist_edges": stats["hist_edges"],
            "hist_counts": stats["hist_counts"],
            "reward_mean": float(np.mean(rewards)) if rewards else None,
            "created_at": utc_now(),
            "converted_from": label,
        })
        written.append(global_step)
        del data, records  # before the next step is loaded
        write_summary(out_dir, {
            "model": None,
            "tokenizer": tokenizer_path,
            "flags": {
                "high_entropy_token_ratio": high_entropy_token_ratio,
                "high_entropy_scope": high_entropy_scope,
                "num_trajectories_per_step": num_trajectories_per_step,
                "steps": steps if isinstance(steps, str) else None,
            },
            "converted_from": {"source": str(src), "kind": kind},
            "package_version": __version__,
        }, created_at=created_at)
    bar.close()
    if not written:
        raise ConvertError(f"{src}: no steps to convert" + (f" (--steps {steps})" if steps else ""))
    return {"kind": kind, "steps": written, "out_dir": str(out_dir)}




# ----------------------------------------------------------------------------- CLI

def run_convert(args: argparse.Namespace) -> int:
    """Handler of `openrlhf-traj convert`."""
    try:
        result = convert(
            args.src,
            args.output,
            tokenizer=args.tokenizer,
            high_entropy_token_ratio=args.high_entropy_token_ratio,
            high_entropy_scope=args.high_entropy_scope,
            num_trajectories_per_step=args.num_trajectories_per_step,
            sampling=args.trajectory_sampling,
            seed=args.seed,
            steps=args.steps,
            overwrite=args.overwrite,
        )
    except (ConvertError, ValueError) as error:
        print(f"openrlhf-traj convert: error: {error}", file=sys.stderr)
        return 2
    steps = result["steps"]
    print(f"wrote {len(steps)} step(s) ({steps[0]}..{steps[-1]}) from a {result['kind']} source to {result['out_dir']}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `convert` on the openrlhf-traj CLI (`subparsers` from add_subparsers())."""
    parser = subparsers.add_parser(
        "convert",
        help="turn an npz entropy trace or rollout JSONL dumps into trajectory files",
        description="Convert SRC into trajectory files (trajectories_step_N.json, manifest.jsonl, "
        "summary.json). SRC is an entropy-trace folder (steps/step_NNNNNN.npz, ours from "
        "--save_entropy_trace or another trainer's) or a folder of rollout *.jsonl files with "
        "input/output/score/step. Example: openrlhf-traj convert runs/exp1/trajectories "
        "-o runs/exp1/all --tokenizer Qwen/Qwen2.5-0.5B --num_trajectories_per_step 64",
    )
    parser.add_argument("src", help="entropy-trace folder (with steps/*.npz) or rollout JSONL folder/file")
    parser.add_argument("-o", "--output", required=True, help="folder to write the trajectory files to")
    parser.add_argument(
        "--tokenizer", default=None,
        help="tokenizer folder, tokenizer.json or name, to decode npz token ids (default: the "
        "tokenizer our summary.json names)",
    )
    parser.add_argument(
        "--high_entropy_token_ratio", type=float, default=0.2,
        help="share of the step's response tokens marked high-entropy (FORMAT.md)",
    )
    parser.add_argument(
        "--high_entropy_scope", choices=["step", "response"], default="step",
        help="mark the top ratio over the whole step (default) or inside each response",
    )
    parser.add_argument(
        "--num_trajectories_per_step", type=int, default=None,
        help="write N responses of each step (default: all; marks always use all)",
    )
    parser.add_argument(
        "--trajectory_sampling", choices=SAMPLING_MODES, default="first",
        help="which N, as the saver's flag: first (default), whole prompt groups, groups with the most "
             "high-entropy tokens (forks), random, or stratified by reward/score",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the random samplings (default 42)")
    parser.add_argument("--steps", default=None, help="steps to convert, e.g. 1,5,10-20 (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace trajectory files already in OUTPUT")
    parser.set_defaults(func=run_convert)
    return parser
