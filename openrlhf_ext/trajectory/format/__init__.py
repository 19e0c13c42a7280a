"""Reading and checking trajectory files (FORMAT.md): ``load_trajectories``, the record schema and
its ``Problem``s. Needs numpy and orjson, not torch, so the command-line checks start fast.

Example:
    >>> from openrlhf_ext.trajectory.format import validate_records
    >>> [str(p) for p in validate_records({"not": "an array"}, "x.json")]
    ['x.json: top level must be a JSON array of records, got dict']
"""
from .reading import Checked, check_trajectories, load_trajectories, manifest_problems, read_step_files, resolve_step_files
from .schema import Problem, TrajectoryFormatError, parse_json_file, record_problems, validate_records

__all__ = [
    "Checked", "Problem", "TrajectoryFormatError", "check_trajectories", "load_trajectories", "manifest_problems",
    "parse_json_file", "read_step_files", "record_problems", "resolve_step_files", "validate_records",
]
