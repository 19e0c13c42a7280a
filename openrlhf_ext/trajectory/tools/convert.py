"""`openrlhf-traj convert`: other tools' traces (and our own npz traces) into trajectory files.

    openrlhf-traj convert SRC -o OUT_DIR [--tokenizer PATH] [--high_entropy_token_ratio 0.2]
                          [--num_trajectories_per_step N] [--steps 1,5,10-20]

SRC is detected by what it holds:
- `trajectories_step_N.json[.gz]` files (or one such file) that the viewer opens, from any saver:
  rewritten to follow FORMAT.md exactly, read as the viewer reads them and with its notices
  (convert_trajectories.py; `--strict` refuses a file that breaks the format instead).
- `steps/step_NNNNNN.npz` (or a folder of those): an entropy trace, ours (--save_entropy_trace) or
  another trainer's. Token ids are decoded with --tokenizer (default: the tokenizer path in SRC's
  summary.json when it is ours and that path exists) and tokens are marked high-entropy over all
  responses of the step, as FORMAT.md defines (`high_entropy_mask`).
- `*.jsonl` files of rollout lines with `input`, `output`, `score`, `step`: text only, no entropy;
  the viewer shows them unmarked.

OUT_DIR gets `trajectories_step_N.json`, `manifest.jsonl` and `summary.json` of FORMAT.md, each
written atomically, under the folder's writer lock; it is never a folder SRC's files are in. Conversion streams: one step's arrays and records are alive at a time, and a
step's records are serialised one by one, so memory is bounded by the largest step's output.

Example (a rollout dump of two lines, text only):
    >>> import json, pathlib, tempfile
    >>> from openrlhf_ext.trajectory import load_trajectories
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "rollouts"
    >>> src.mkdir()
    >>> lines = [{"input": "1+1=", "output": "2", "score": 1.0, "step": 5},
    ...          {"input": "1+1=", "output": "3", "score": 0.0, "step": 5}]
    >>> _ = (src / "5.jsonl").write_text("".join(json.dumps(line) + "\\n" for line in lines))
    >>> convert(src, src.parent / "out")
    {'kind': 'jsonl', 'steps': [5], 'out_dir': '.../out', 'notices': [], 'errors': []}
    >>> [r["pure_generated_text"] for r in load_trajectories(src.parent / "out")]
    ['2', '3']

An npz trace needs the tokenizer of its token ids:
    >>> convert("runs/exp1/trajectories", "runs/exp1/all_responses", tokenizer="Qwen/Qwen2.5-0.5B",
    ...         num_trajectories_per_step=64)  # doctest: +SKIP
    {'kind': 'npz', 'steps': [1, 2, ...], 'out_dir': 'runs/exp1/all_responses', 'notices': [], 'errors': []}
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from openrlhf_ext import __version__

from ..files import MANIFEST_FILE, MAX_STEP, step_file_name, upsert_manifest, utc_now, write_records, write_summary
from ..folder_lock import FolderLock
from ..format.reading import read_our_summary
from ..format.schema import writable_text
from ..manifest_entry import manifest_entry
from ..marks import SCOPES, check_ratio
from .convert_jsonl import find_jsonl_files, jsonl_step_records, looks_like_rollout_jsonl, read_jsonl_steps
from .convert_npz import find_npz_steps, npz_step_records, npz_steps_dir, read_npz_step
from .convert_trajectories import trajectory_files, trajectory_step_records, trajectory_steps
from .errors import ConvertError
from .outputs import check_output_folder
from .steps import parse_steps


# ----------------------------------------------------------------------------- detection

def detect_source(src: str | Path) -> str:
    """"npz", "trajectories" or "jsonl" for what `src` holds; ConvertError saying what was
    expected otherwise."""
    src = Path(src)
    if not src.exists():
        raise ConvertError(f"{src}: no such file or folder")
    if src.is_dir() and npz_steps_dir(src) is not None:
        return "npz"
    if src.is_file() and src.suffix == ".npz":
        raise ConvertError(f"{src}: give the folder that holds the steps/step_NNNNNN.npz files, not one file")
    if src.suffix != ".jsonl" and trajectory_files(src):
        return "trajectories"
    jsonl = find_jsonl_files(src)
    if jsonl and looks_like_rollout_jsonl(jsonl[0]):
        return "jsonl"
    raise ConvertError(
        f"{src}: not a known trace: expected trajectories_step_N.json files, steps/step_NNNNNN.npz files (an "
        f"entropy trace) or *.jsonl files whose lines have input, output, score, step (rollout dumps)"
    )


def input_folders(kind: str, src: Path) -> list[Path]:
    """The folders `src`'s files are read from: convert never writes into them."""
    src = Path(src)
    folders = [src] if src.is_dir() else [src.parent]
    if kind == "npz":
        folders.append(npz_steps_dir(src))
    elif kind == "trajectories":
        folders += dict.fromkeys(p.parent for p in trajectory_files(src))  # each folder once
    return folders


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

    Only our own summary is trusted (``is_our_summary``: its ``generator``, or format_version 1):
    other trainers' (format_version 2 too) carry other fields. The path is usable when it exists here; a hub name is returned as `name` only,
    so that nothing is downloaded unless the user passes it with --tokenizer."""
    summary = read_our_summary(src.parent if src.name == "steps" else src)
    if summary is None:
        return None, None
    for key in ("tokenizer", "model"):
        value = summary.get(key)
        if isinstance(value, str) and value:
            return (value if Path(value).exists() else None), value
    return None, None


def _steps_of(kind: str, src: Path, wanted, found: dict):
    """Yield (global_step, label, load) per step, lazily: `load()` reads that step only."""
    if kind == "npz":
        for global_step, path in find_npz_steps(npz_steps_dir(src)):
            if wanted is None or global_step in wanted:
                yield global_step, path.name, (lambda p=path, s=global_step: read_npz_step(p, s))
        return
    if kind == "trajectories":
        for global_step, name, records in trajectory_steps(trajectory_files(src), found["notices"], found["errors"],
                                                           found["strict"], wanted):
            yield global_step, name, (lambda r=records: r)
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
    strict: bool = False,
) -> dict:
    """Convert SRC (step files the viewer opens, an npz entropy trace, or rollout JSONL) into
    trajectory files in `out_dir`.

    `tokenizer`: a tokenizer object or a path (npz only; default: the one our summary.json names).
    `strict`: refuse step files that break FORMAT.md instead of converting what the viewer shows.
    Returns {"kind", "steps", "out_dir", "notices", "errors"}: `notices` what the viewer would
    note about the step files, `errors` the files left out because it would refuse them. Raises
    ConvertError naming the file on broken input (npz, JSONL) or when there is nothing to write.
    """
    src, out_dir = Path(src), Path(out_dir)
    kind = detect_source(src)
    try:
        high_entropy_token_ratio = check_ratio(high_entropy_token_ratio)
    except ValueError as error:
        raise ConvertError(f"--high_entropy_token_ratio: {error}") from None
    if high_entropy_scope not in SCOPES:
        raise ConvertError(f"--high_entropy_scope must be one of {', '.join(SCOPES)}, got {high_entropy_scope!r}")
    if num_trajectories_per_step is not None and num_trajectories_per_step < 1:
        raise ConvertError("--num_trajectories_per_step must be at least 1")
    wanted = parse_steps(steps)
    check_output_folder(out_dir, input_folders(kind, src))

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

    manifest = out_dir / MANIFEST_FILE
    if manifest.exists() and not overwrite:
        raise ConvertError(
            f"{out_dir}: already holds trajectory files (manifest.jsonl); pass --overwrite to "
            "replace the steps converted now (the manifest keeps one entry per step)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    found = {"notices": [], "errors": [], "strict": strict}
    summary = {
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
    }
    with FolderLock(out_dir, "openrlhf-traj convert"):
        written = _write_steps(kind, src, out_dir, wanted, found, tokenizer, summary, progress,
                               ratio=high_entropy_token_ratio, scope=high_entropy_scope,
                               limit=num_trajectories_per_step, sampling=sampling, seed=seed)
    if not written:
        why = "; ".join(str(e) for e in found["errors"][:5])
        raise ConvertError(f"{src}: no steps to convert" + (f" (--steps {steps})" if steps else "") + (f": {why}" if why else ""))
    return {"kind": kind, "steps": written, "out_dir": str(out_dir), "notices": found["notices"], "errors": found["errors"]}


def _write_steps(kind, src, out_dir, wanted, found, tokenizer, summary, progress, *, ratio, scope, limit,
                 sampling, seed) -> list[int]:
    """Convert and write each step, one at a time; the steps written."""
    created_at = utc_now()
    written: list[int] = []
    plan = _steps_of(kind, src, wanted, found)
    plan = list(plan) if kind == "npz" else plan
    bar = tqdm(plan, desc=f"convert {kind}", unit="step", disable=(None if progress is None else not progress))
    for global_step, label, load in bar:
        label = writable_text(label)  # a file name that is not UTF-8 goes into the manifest too
        bar.set_postfix_str(label)
        if not 0 <= global_step <= MAX_STEP:
            raise ConvertError(f"{label}: step {global_step} is beyond the largest step a file can name ({MAX_STEP})")
        data = load()  # this step only
        step_ratio = ratio
        if kind == "npz":
            records, step_info = npz_step_records(data, tokenizer, ratio, scope, limit, sampling=sampling, seed=seed)
        elif kind == "trajectories":
            records, step_info, step_ratio = trajectory_step_records(data, limit, sampling, seed)
        else:
            records, step_info = jsonl_step_records(global_step, data, limit, sampling, seed)
            step_ratio = None
        # write_records serialises each record before the next is built: one record alive at a time
        try:
            num_saved = write_records(out_dir / step_file_name(global_step), records)
        except TypeError as error:  # a value orjson cannot write (nested over 254 levels)
            raise ConvertError(f"{label}: step {global_step} cannot be written as strict JSON: {error}") from None
        upsert_manifest(out_dir / MANIFEST_FILE, manifest_entry(
            global_step, num_saved=num_saved, ratio=step_ratio, converted_from=label,
            file_bytes=(out_dir / step_file_name(global_step)).stat().st_size, **step_info))
        written.append(global_step)
        del data, records, step_info  # before the next step is loaded
        write_summary(out_dir, summary, created_at=created_at)
    bar.close()
    return written
