"""Reading trajectory files (FORMAT.md): the step files a path names, and their records, checked.

Every file may come from anywhere and be broken: what is wrong is collected as ``Problem``s
(file, record, field) and reported together, never as a traceback half-way through a folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..files import MANIFEST_FILE, list_step_files, read_manifest
from .schema import Problem, TrajectoryFormatError, parse_json_file, record_problems, validate_records


def resolve_step_files(path) -> list[Path]:
    """The step files that ``path`` names: a step file, a trajectories folder, or a run's
    ``save_path`` that holds ``trajectories/``. Raises FileNotFoundError with what was looked for.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    for folder in (path, path / "trajectories"):
        if folder.is_dir():
            files = [p for _, p in list_step_files(folder)]
            if files:
                return files
    raise FileNotFoundError(f"{path}: no trajectories_step_<N>.json files here or in {path / 'trajectories'}")


def read_step_files(files, keep_invalid: bool = True) -> tuple[list[dict], list[Problem]]:
    """The records of ``files`` and every problem found in them. A file that cannot be parsed, or
    whose top level is not an array, gives no records; with ``keep_invalid=False`` the records
    that break the format are dropped too."""
    records: list[dict] = []
    problems: list[Problem] = []
    for file in files:
        data, parse_problems = parse_json_file(Path(file))
        problems.extend(parse_problems)
        if data is None:
            continue
        problems.extend(validate_records(data, str(file)))
        if not isinstance(data, list):
            continue
        if keep_invalid:
            records.extend(data)
        else:
            records.extend(r for i, r in enumerate(data) if not record_problems(r, i, str(file)))
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


def manifest_problems(folder) -> list[Problem]:
    """A problem for each step that ``folder``'s manifest.jsonl lists but whose file is missing."""
    manifest = Path(folder) / MANIFEST_FILE
    problems = []
    for entry in read_manifest(manifest):
        name = entry.get("file")
        if isinstance(name, str) and not (Path(folder) / Path(name).name).exists():
            problems.append(Problem(str(manifest), None, None,
                                    f"step {entry.get('global_step')}: lists {name}, which is missing"))
    return problems


@dataclass
class Checked:
    """What ``check_trajectories`` found: the step files, how many records they hold, and every
    problem (empty: the files are valid)."""

    files: list[Path]
    num_records: int
    problems: list[Problem]


def check_trajectories(path) -> Checked:
    """Check every step file that ``path`` names, and the manifest beside them: what
    ``openrlhf-traj validate`` reports. Raises FileNotFoundError when ``path`` names none."""
    files = resolve_step_files(path)
    records, problems = read_step_files(files)
    return Checked(files, len(records), problems + manifest_problems(files[0].parent))
