"""Where the tools may write: never over what they read, never over a file they did not write.

``report -o run/trajectories_step_1.json`` once replaced the input with HTML and exited 0. A
report's output must not be one of its inputs (``--force`` does not change that), nor an existing
file that is not a report (recognised by the mark the report writes at the start of its data),
unless ``--force``. ``convert`` never writes into a folder it reads from.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConvertError, ReportError

# The start of every report's data block (report.py writes the payload with this key first).
REPORT_MARK = b'id="embedded-trajectories">{"generator":"openrlhf-traj report"'
_MARK_WITHIN = 8 << 20  # the mark follows the viewer's <head>: a few tens of KB into the file


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def is_our_report(path: Path) -> bool:
    """True when ``path`` starts like a report that ``openrlhf-traj report`` wrote."""
    try:
        with open(path, "rb") as f:
            return REPORT_MARK in f.read(_MARK_WITHIN)
    except OSError:
        return False


def check_report_output(output, inputs, force: bool = False) -> None:
    """Raise ReportError when the report may not be written to ``output``: a folder, one of the
    ``inputs``, something that is not a regular file, or (without ``force``) an existing file
    that is not a report written by this tool."""
    output = Path(output)
    if output.is_dir():
        raise ReportError(f"{output} is a folder: give the report's file name, e.g. {output / 'report.html'}")
    if not output.exists():
        return
    for path in inputs:
        if _same(output, Path(path)):
            raise ReportError(f"{output} is one of the report's inputs: it is never written over "
                              "(give another file name with -o)")
    if not output.is_file():
        raise ReportError(f"{output} is not a regular file: the report is written to files only")
    if not force and not is_our_report(output):
        raise ReportError(f"{output} exists and is not a report written by openrlhf-traj report: it is left "
                          "as it is (pass --force to replace it, or give another file name with -o)")


def check_output_folder(out_dir, input_folders) -> None:
    """Raise ConvertError when ``out_dir`` is one of the folders a conversion reads from (its
    step files would be replaced by their own conversion), or is not a folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"{out_dir} is not a folder: -o names the folder the trajectory files go to")
    for folder in input_folders:
        if out_dir.exists() and _same(out_dir, Path(folder)):
            raise ConvertError(f"{out_dir} is a folder convert reads from: it never writes into its input's "
                               "folder; give another folder with -o")
