"""Reading and checking trajectory files (FORMAT.md): ``load_trajectories``, the record schema and
its ``Problem``s, the viewer's lenient reading (``read_lenient``) and the bounded reader every
reader goes through. Needs numpy and orjson, not torch, so the command-line checks start fast.

Example:
    >>> from openrlhf_ext.trajectory.format import validate_records
    >>> [str(p) for p in validate_records({"not": "an array"}, "x.json")]
    ['x.json: top level must be a JSON array of records, got dict']
"""
from .bounded import UnreadableFile, read_bytes
from .lenient import LenientFile, read_lenient, read_lenient_files
from .reading import (Checked, check_trajectories, load_trajectories, manifest_problems, read_manifest_entries,
                      read_step_files, resolve_step_files)
from .schema import Problem, TrajectoryFormatError, parse_json_file, read_json, record_problems, validate_records

__all__ = [
    "Checked", "LenientFile", "Problem", "TrajectoryFormatError", "UnreadableFile", "check_trajectories",
    "load_trajectories", "manifest_problems", "parse_json_file", "read_bytes", "read_json", "read_lenient",
    "read_lenient_files", "read_manifest_entries", "read_step_files", "record_problems", "resolve_step_files",
    "validate_records",
]
