"""Reading trajectory files (FORMAT.md): the step files a path names, and their records, checked.

Every file may come from anywhere and be broken: what is wrong is collected as ``Problem``s
(file, record, field) and reported together, never as a traceback half-way through a folder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..files import MANIFEST_FILE, SUMMARY_FILE, is_our_summary, list_probe_files, list_step_files, parse_manifest
from ..files import step_file_name, step_of_file_name
from .bounded import MAX_MANIFEST_BYTES, MAX_SUMMARY_BYTES, UnreadableFile, read_bytes
from .schema import Problem, TrajectoryFormatError, is_finite_number, parse_json_file, record_problems, validate_records


def resolve_step_files(path) -> list[Path]:
    """The step files that ``path`` names: a step file, a trajectories folder, or a run's
    ``save_path`` that holds ``trajectories/``. Raises FileNotFoundError with what was looked for.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: " + ("not a file or folder" if path.exists() else "no such file or folder"))
    for folder in (path, path / "trajectories"):
        if folder.is_dir():
            files = [p for _, p in list_step_files(folder)]
            if files:
                return files
    raise FileNotFoundError(f"{path}: no trajectories_step_<N>.json files here or in {path / 'trajectories'}")


def read_step_files(files, keep_invalid: bool = True, found: dict | None = None,
                    max_alternatives: int | None = None) -> tuple[list[dict], list[Problem]]:
    """The records of ``files`` and every problem found in them. A file that cannot be parsed, or
    whose top level is not an array, gives no records; with ``keep_invalid=False`` the records
    that break the format are dropped too. ``found``, when given, gets each readable file's
    ``(number of records, the first high_entropy_threshold)``, for the manifest's checks;
    ``max_alternatives``: the run's K, when known (``run_top_k``)."""
    records: list[dict] = []
    problems: list[Problem] = []
    for file in files:
        data, parse_problems = parse_json_file(Path(file))
        problems.extend(parse_problems)
        if data is None:
            continue
        problems.extend(validate_records(data, str(file), max_alternatives))
        if not isinstance(data, list):
            continue
        if found is not None:
            found[Path(file).name] = (len(data), next((r.get("high_entropy_threshold") for r in data if isinstance(r, dict)
                                                        and is_finite_number(r.get("high_entropy_threshold"))), None))
        if keep_invalid:
            records.extend(data)
        else:
            records.extend(r for i, r in enumerate(data) if not record_problems(r, i, str(file), max_alternatives))
    return records, problems


def load_trajectories(path, strict: bool = True) -> list[dict]:
    """Read the records of a step file or of every step file of a run folder, checked against
    FORMAT.md.

    Args:
        path: ``trajectories_step_N.json`` (or ``.json.gz``), a folder of them, or a run's
            ``save_path`` holding ``trajectories/``.
        strict: raise ``TrajectoryFormatError`` listing every problem (file, record, field).
            With ``strict=False`` broken files are skipped and malformed records dropped, so you
            get what can be read.

    Example:
        >>> import tempfile
        >>> from openrlhf_ext.trajectory.files import write_records
        >>> folder = tempfile.mkdtemp()
        >>> write_records(f"{folder}/trajectories_step_2.json", [{"global_step": 2}])
        1
        >>> try:
        ...     load_trajectories(folder)
        ... except TrajectoryFormatError as error:   # every problem, each with its file, record, field
        ...     print(len(error.problems), error.problems[0].record, error.problems[0].field)
        9 0 experience_index
        >>> load_trajectories(folder, strict=False)  # what can be read: here, nothing
        []
    """
    records, problems = read_step_files(resolve_step_files(path), keep_invalid=strict)
    if strict and problems:
        raise TrajectoryFormatError(problems)
    return records


def read_manifest_entries(folder) -> tuple[list[dict], list[Problem]]:
    """The manifest.jsonl entries of ``folder`` through the bounded reader (``[]`` when there is
    none), and a problem when it exists but cannot be read."""
    manifest = Path(folder) / MANIFEST_FILE
    if not manifest.exists() and not manifest.is_symlink():
        return [], []
    try:
        return parse_manifest(read_bytes(manifest, MAX_MANIFEST_BYTES)), []
    except UnreadableFile as error:
        return [], [Problem(str(manifest), None, None, error.reason)]


def read_our_summary(folder) -> dict | None:
    """``folder``'s summary.json when it is ours (``is_our_summary``), through the bounded reader;
    None when there is none, it cannot be read, or another tool wrote it (their fields differ)."""
    try:
        summary = orjson.loads(read_bytes(Path(folder) / SUMMARY_FILE, MAX_SUMMARY_BYTES))
    except (UnreadableFile, orjson.JSONDecodeError):
        return None
    return summary if is_our_summary(summary) else None


def run_top_k(folder) -> int | None:
    """The run's ``--save_top_k_alternatives`` K from our own summary.json in ``folder`` (None
    when there is none, it is another tool's, or it does not say)."""
    summary = read_our_summary(folder)
    flags = summary.get("flags") if summary is not None else None
    k = flags.get("save_top_k_alternatives") if isinstance(flags, dict) else None
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None


def probe_problems(folder, entries: list[dict], probe_names) -> list[Problem]:
    """A probe file that no manifest line names as its ``probe_file``, and a line whose
    ``probe_file`` is missing (only when the manifest has lines of ours)."""
    folder = Path(folder)
    ours = [e for e in entries if isinstance(e.get("file"), str) and isinstance(e.get("global_step"), int)]
    if not ours:
        return []
    named = {e["probe_file"]: e["global_step"] for e in ours if isinstance(e.get("probe_file"), str)}
    problems = [Problem(str(folder / name), None, None, "a probe file that no manifest.jsonl line names as its "
                        "probe_file (the manifest was not written after it, or it is another run's)")
                for name in probe_names if name not in named]
    problems += [Problem(str(folder / MANIFEST_FILE), None, None, f"step {step}: its probe_file {name} is missing")
                 for name, step in named.items() if not (folder / Path(name).name).exists()]
    return problems


def manifest_problems(folder, found: dict | None = None, manifest_read=None) -> list[Problem]:
    """What disagrees between ``folder``'s manifest.jsonl and its step files: a line whose file is
    missing, and, given ``found`` (``read_step_files``'), a step file with no line (the manifest
    was not written after it: a full disk, a crash) or a line whose ``num_saved`` or
    ``high_entropy_threshold`` is not the file's (two runs writing one folder).
    ``manifest_read``: what ``read_manifest_entries(folder)`` gave, when the caller has it."""
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    entries, read_problems = read_manifest_entries(folder) if manifest_read is None else manifest_read
    problems = list(read_problems)
    ours = {}
    for entry in entries:
        name, step = entry.get("file"), entry.get("global_step")
        if not isinstance(name, str) or not isinstance(step, int) or isinstance(step, bool):
            continue  # another tool's line: not ours to check
        ours[Path(name).name] = entry
        if not (folder / Path(name).name).exists():
            problems.append(Problem(str(manifest), None, None, f"step {step}: lists {name}, which is missing"))
    for name, (count, threshold) in (found or {}).items() if ours else ():
        entry = ours.get(name)
        if entry is None:
            step = step_of_file_name(name)
            if step is not None and name == step_file_name(step):  # our own name: the saver's file
                problems.append(Problem(str(folder / name), None, None, "has no line in manifest.jsonl (the manifest was "
                                        "not written after this step: a full disk or a crash?); the saver's next step adds it"))
            continue
        if isinstance(entry.get("num_saved"), int) and entry["num_saved"] != count:
            problems.append(Problem(str(folder / name), None, None, f"holds {count} record(s), the manifest says "
                                    f"num_saved {entry['num_saved']} (two runs writing one folder?)"))
        listed = entry.get("high_entropy_threshold")
        if is_finite_number(listed) and threshold is not None and not math.isclose(listed, threshold, rel_tol=1e-6, abs_tol=1e-9):
            problems.append(Problem(str(folder / name), None, None, f"its records' high_entropy_threshold {threshold:.6g} "
                                    f"is not the manifest's {listed:.6g} (two runs writing one folder?)"))
    return problems


@dataclass
class Checked:
    """What ``check_trajectories`` found: the step files, how many records they hold, and every
    problem (empty: the files are valid)."""

    files: list[Path]
    num_records: int
    problems: list[Problem]


def check_trajectories(path) -> Checked:
    """Check every step file that ``path`` names, the probe files beside them, and the manifest:
    what ``openrlhf-traj validate`` reports. Raises FileNotFoundError when ``path`` names none."""
    files = resolve_step_files(path)
    folder = files[0].parent
    k = run_top_k(folder)
    # one file read at a time and its records only counted: a folder's files are never all in memory
    found: dict = {}  # step file name -> (records, first threshold), for the manifest's checks too
    problems: list[Problem] = []
    for file in files:
        problems += read_step_files([file], found=found, max_alternatives=k)[1]
    manifest_read = read_manifest_entries(folder)
    problems += manifest_problems(folder, found, manifest_read)
    probes = [p for _, p in list_probe_files(folder)] if Path(path).is_dir() else []
    probes_found: dict = {}
    for probe in probes:
        problems += read_step_files([probe], found=probes_found, max_alternatives=k)[1]
    if probes:
        problems += probe_problems(folder, manifest_read[0], [p.name for p in probes])
    num_records = sum(count for count, _ in (*found.values(), *probes_found.values()))
    return Checked(files + probes, num_records, problems)
