"""One-file HTML reports: the viewer page with the chosen steps' trajectories embedded.

`openrlhf-traj report PATH... -o report.html` reads trajectory files (FORMAT.md), keeps the chosen
steps, and renders `templates/report.html.j2`: the viewer file itself (found at run time by
`find_viewer_html`, so the report runs exactly the viewer's code) with the data in the viewer's
embedded-data hook

    <script type="application/json" id="embedded-trajectories">
      {"files": [{"name": "trajectories_step_3.json", "encoding": "json" | "gzip-base64",
                  "data": <records array> | <base64 of the gzip bytes of the JSON array>}],
       "title": "optional"}
    </script>

It goes at the end of the viewer's <head>, before the viewer's script reads it. When one run
folder is given, its manifest.jsonl and summary.json go in too (the viewer's over-steps charts).
The JSON is escaped for a script block (`script_safe_json`), so a token text such as
`</script><script>alert(1)</script>` or `<!--` stays data. The page needs no network.

Example:
    >>> from openrlhf_ext.trajectory.tools.report import write_report
    >>> info = write_report(["runs/exp1/trajectories"], "report.html", steps="1,5,10-20",
    ...                     max_trajectories_per_step=8, gzip_data=True, title="exp1")  # doctest: +SKIP
    >>> info["files"], info["size_bytes"]  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import gzip
import os
import re
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path

import jinja2

from ..files import MANIFEST_FILE, SUMMARY_FILE, atomic_write_bytes, dumps_strict_json
from ..files import list_probe_files, probe_step_of_file_name, step_of_file_name
from ..format import Problem, UnreadableFile, load_trajectories, read_bytes, read_lenient, resolve_step_files
from ..format.bounded import MAX_MANIFEST_BYTES, MAX_STEP_FILE_BYTES, MAX_SUMMARY_BYTES
from ..format.schema import writable_text
from .errors import ReportError
from .outputs import check_report_output
from .steps import parse_steps

VIEWER_FILE_NAME = "render_trajectories.html"
# A report above this many bytes gets a warning: browsers parse it slowly and it is awkward to share.
LARGE_REPORT_BYTES = 20 * 1024 * 1024


class LargeReportWarning(UserWarning):
    """The report is larger than `LARGE_REPORT_BYTES`; the message says how to make it smaller."""


# ----------------------------------------------------------------------------- the viewer file

def _repo_viewer_path() -> Path:
    # openrlhf_ext/trajectory/tools/report.py -> <repo>/viewer/render_trajectories.html (a
    # checkout or an editable install).
    return Path(__file__).resolve().parents[3] / "viewer" / VIEWER_FILE_NAME


def find_viewer_html(explicit: str | os.PathLike | None = None) -> tuple[str, str]:
    """Return (html, where) of the viewer page that reports embed.

    Looks, in order, at `explicit` (--viewer), the repository's `viewer/render_trajectories.html`
    (the source of truth in a checkout), and the copy packaged as
    `openrlhf_ext/assets/render_trajectories.html` (an installed wheel). Raises ReportError naming
    every place it looked.
    """
    looked: list[str] = []
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ReportError(f"viewer file {path} does not exist")
        return path.read_text(encoding="utf-8"), str(path)
    repo_path = _repo_viewer_path()
    looked.append(str(repo_path))
    if repo_path.is_file():
        return repo_path.read_text(encoding="utf-8"), str(repo_path)
    try:
        asset = resources.files("openrlhf_ext").joinpath("assets").joinpath(VIEWER_FILE_NAME)
        looked.append(str(asset))
        if asset.is_file():
            return asset.read_text(encoding="utf-8"), str(asset)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    raise ReportError(
        "cannot find the viewer page the report embeds; looked at: " + ", ".join(looked)
        + ". Run from a checkout that has viewer/render_trajectories.html, reinstall the package,"
        " or pass --viewer PATH."
    )


def _split_for_hook(html: str) -> tuple[str, str]:
    # The viewer reads the hook when its script runs, so the data must come before that script:
    # at the end of <head> (a JSON script element is valid there), or before the first <script>
    # when that comes earlier.
    lower = html.lower()
    places = [i for i in (lower.find("</head>"), lower.find("<script")) if i >= 0]
    if not places:
        return html, ""
    index = min(places)
    return html[:index], html[index:]


# ----------------------------------------------------------------------------- embedding

_SCRIPT_ESCAPES = {
    "<": "\\u003c",  # no "</script>" and no "<!--" can appear inside the block
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",  # line separators: valid in JSON, not in older JS string literals
    "\u2029": "\\u2029",
}
_SCRIPT_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def script_safe_json(obj) -> str:
    """Strict JSON of `obj` that is safe inside <script type="application/json">.

    These characters only occur inside JSON strings, where \\uXXXX is the same character to
    JSON.parse, so the data is unchanged while the HTML parser never sees a tag or comment start.

    Example:
        >>> script_safe_json({"text": "</script><!--"})
        '{"text":"\\\\u003c/script\\\\u003e\\\\u003c!--"}'
    """
    text = dumps_strict_json(obj).decode("utf-8")
    return _SCRIPT_ESCAPE_RE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def _embedded_file(name: str, data, gzip_data: bool) -> dict:
    """One entry of the hook's "files": `data` is a records array, or a file's text (manifest
    .jsonl / summary.json), which the viewer parses as if the file had been picked."""
    if not gzip_data:
        return {"name": name, "encoding": "json", "data": data}
    raw = data.encode("utf-8") if isinstance(data, str) else dumps_strict_json(data)
    # mtime=0: the same data gives the same report bytes.
    packed = gzip.compress(raw, compresslevel=9, mtime=0)
    return {"name": name, "encoding": "gzip-base64", "data": base64.b64encode(packed).decode("ascii")}


# ----------------------------------------------------------------------------- input files

def find_step_files(paths) -> list[tuple[int | None, Path]]:
    """(step, file) for every trajectory file named by `paths`, sorted by step.

    A path is a step file (kept even when its name holds no step: its records say), a
    trajectories folder, or a run's save_path holding trajectories/ (the core's
    resolve_step_files)."""
    found: list[tuple[int | None, Path]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportError(f"{path}: no such file or folder")
        try:
            files = resolve_step_files(path)
        except FileNotFoundError as error:
            raise ReportError(str(error)) from error
        found.extend((step_of_file_name(p.name), p) for p in files)
    return sorted(found, key=lambda item: (item[0] is None, item[0] or 0, str(item[1])))




def _run_metadata(paths, wanted=None) -> list[tuple[str, str]]:
    """(name, text) of manifest.jsonl, summary.json and the probe files (probes_step_N.json of
    the chosen steps: the viewer's prompt-across-steps view) when exactly one run folder is given.

    With several folders they would mix steps of different runs in the viewer, so they stay out.
    The texts go in unparsed (the viewer reports a broken line itself), read through the bounded
    reader; a file that cannot be read or is not UTF-8 is left out with a warning."""
    folders = [Path(p) for p in paths if Path(p).is_dir()]
    if len(folders) != 1:
        return []
    folder = resolve_step_files(folders[0])[0].parent  # a save_path's trajectories/ too
    out = []
    probes = sorted((k, p.name) for p in folder.iterdir() if (k := probe_step_of_file_name(p.name)) is not None)
    probe_files = [(n, MAX_STEP_FILE_BYTES) for k, n in probes if wanted is None or k in wanted]
    for name, limit in ((MANIFEST_FILE, MAX_MANIFEST_BYTES), (SUMMARY_FILE, MAX_SUMMARY_BYTES), *probe_files):
        path = folder / name
        if path.exists() or path.is_symlink():
            try:
                out.append((name, read_bytes(path, limit).decode("utf-8")))
            except (UnreadableFile, UnicodeDecodeError) as error:
                warnings.warn(f"{path}: left out of the report: {error}", stacklevel=3)
    return out


def _unique_names(files: list[Path]) -> list[str]:
    # The viewer lists files by name; two runs' trajectories_step_3.json get their folder prefixed.
    # A .json.gz file is embedded as its JSON (re-serialised), so it loses the .gz.
    names = [writable_text(p.name[: -len(".gz")] if p.name.endswith(".gz") else p.name) for p in files]
    duplicated = {n for n, count in Counter(names).items() if count > 1}
    return [f"{writable_text(p.parent.name)}/{n}" if n in duplicated else n for p, n in zip(files, names)]


def build_report(
    paths,
    steps: str | set[int] | None = None,
    max_trajectories_per_step: int | None = None,
    gzip_data: bool = False,
    title: str | None = None,
    viewer: str | os.PathLike | None = None,
    include_run_files: bool = True,
    strict: bool = False,
) -> tuple[str, dict]:
    """Render the report page; returns (html, info) with info's `files`, `num_records`, `viewer`,
    and `notices` / `errors` (``Problem``s: what the viewer would note about a file, and the files
    left out because the viewer would refuse them).

    Every file the viewer opens goes in, read as the viewer reads it (``read_lenient``), with the
    same notices; `strict` refuses instead any file that breaks FORMAT.md (what ``validate`` says).
    `steps`: "1,5,10-20" or a set; `max_trajectories_per_step`: keep the first N records of each
    file; `gzip_data`: embed each file gzip-compressed (the page inflates it with
    DecompressionStream), typically 5-10x smaller; `include_run_files`: with one run folder,
    embed its manifest.jsonl and summary.json too (the viewer's charts over steps).
    """
    if max_trajectories_per_step is not None and max_trajectories_per_step < 1:
        raise ValueError("max_trajectories_per_step must be at least 1")
    wanted = parse_steps(steps)
    viewer_html, viewer_where = find_viewer_html(viewer)
    chosen, notices, errors = _choose(find_step_files(paths), wanted, max_trajectories_per_step, strict)
    if not chosen:
        raise ReportError(
            ("no trajectory file could be shown: " + "; ".join(str(e) for e in errors[:5]) if errors else
             "no trajectory files matched" + (f" --steps {steps}" if steps else "") + " in " + ", ".join(map(str, paths))))
    try:
        payload = _payload(paths, chosen, gzip_data, title, include_run_files, wanted)
        embedded_json = script_safe_json(payload)
    except TypeError:  # a file nested deeper than orjson writes (254 levels): left out, named
        chosen = _embeddable(chosen, errors)
        if not chosen:
            raise ReportError("no trajectory file could be shown: " + "; ".join(str(e) for e in errors[:5])) from None
        payload = _payload(paths, chosen, gzip_data, title, include_run_files, wanted)
        embedded_json = script_safe_json(payload)

    head, tail = _split_for_hook(viewer_html)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        # No HTML autoescape: the viewer is inserted verbatim and the data is escaped for its
        # script-block context by script_safe_json (HTML-escaping would corrupt the JSON).
        autoescape=False,
    )
    html = env.get_template("report.html.j2").render(viewer_head=head, viewer_tail=tail, embedded_json=embedded_json)
    info = {
        "files": [entry["name"] for entry in payload["files"]],
        "num_records": sum(shown for _, _, shown in chosen),
        "viewer": viewer_where,
        "notices": notices,
        "errors": errors,
    }
    return html, info


def _choose(found, wanted, max_per_step, strict: bool):
    """(path, data to embed, how many records the viewer shows of it) of each file to show, the
    viewer's notices, and the files refused."""
    chosen, notices, errors = [], [], []
    for step, path in found:
        if wanted is not None and step is not None and step not in wanted:
            continue  # skipped without reading it
        if strict:
            data = load_trajectories(path)  # TrajectoryFormatError: every problem, by file, record, field
            kept, steps = list(range(len(data))), [r.get("global_step") for r in data]
        else:
            try:
                read = read_lenient(path, records=False)
            except UnreadableFile as error:
                errors.append(Problem(str(path), None, None, error.reason))
                continue
            data, kept, steps = read.data, read.kept, read.steps
            if not data and read.step is None:
                notices.extend(read.notices)  # "nothing to show"
                continue
        if wanted is not None and step is None and not any(s in wanted for s in steps):
            continue  # no step in the name: decided by the records' own global_step
        if not strict:
            notices.extend(read.notices)
        if max_per_step is not None and len(kept) > max_per_step:
            data, kept = [data[i] for i in kept[:max_per_step]], kept[:max_per_step]
        chosen.append((path, data, len(kept)))  # the records the viewer shows, of the data embedded
    return chosen, notices, errors


def _payload(paths, chosen, gzip_data: bool, title, include_run_files: bool, wanted=None) -> dict:
    names = _unique_names([path for path, _, _ in chosen])
    entries = [_embedded_file(n, data, gzip_data) for n, (_, data, _) in zip(names, chosen)]
    if include_run_files:
        entries += [_embedded_file(n, text, gzip_data) for n, text in _run_metadata(paths, wanted)]
    payload: dict = {"generator": "openrlhf-traj report", "files": entries}  # the mark: outputs.REPORT_MARK
    if title:
        payload["title"] = title
    return payload


def _embeddable(chosen: list, errors: list) -> list:
    """The files of `chosen` that strict JSON can write; the others go to `errors`, named."""
    kept = []
    for path, data, shown in chosen:
        try:
            dumps_strict_json({"files": [{"data": data}]})  # as deep as it sits in the payload
            kept.append((path, data, shown))
        except TypeError as error:
            errors.append(Problem(str(path), None, None, f"cannot be embedded: {error} (nested more than 254 levels?)"))
    return kept


def write_report(paths, output, warn_bytes: int | None = None, force: bool = False, **kwargs) -> dict:
    """Build the report (see build_report) and write it atomically to `output`.

    Never writes over one of its inputs, nor (unless `force`) over an existing file that is not
    a report written here (outputs.check_report_output). Warns with LargeReportWarning when it
    is over `warn_bytes` (default LARGE_REPORT_BYTES, 20 MiB). Returns info with `size_bytes`.
    """
    if warn_bytes is None:
        warn_bytes = LARGE_REPORT_BYTES
    files = [p for _, p in find_step_files(paths)]
    folders = dict.fromkeys(f.parent for f in files)  # each folder once
    run_files = [d / name for d in folders for name in (MANIFEST_FILE, SUMMARY_FILE)]
    run_files += [p for d in folders for _, p in list_probe_files(d)]  # embedded too (_run_metadata)
    check_report_output(output, files + run_files, force)
    html, info = build_report(paths, **kwargs)
    data = html.encode("utf-8")
    info["size_bytes"] = len(data)
    if len(data) > warn_bytes:
        hints = []
        if not kwargs.get("gzip_data"):
            hints.append("--gzip (embed compressed, typically 5-10x smaller)")
        hints.append("--max_trajectories_per_step N (fewer trajectories per step)")
        hints.append("--steps 1,5,10-20 (fewer steps)")
        warnings.warn(
            f"{output}: the report is {human_size(len(data))} (over {human_size(warn_bytes)}); "
            "browsers open it slowly and it is awkward to share. To make it smaller use "
            + ", ".join(hints) + ".",
            LargeReportWarning,
            stacklevel=2,
        )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, data)
    return info


def human_size(num_bytes: int) -> str:
    """``12.3 MiB`` or ``4.5 KiB``: sizes as the report's messages give them."""
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 1024:.1f} KiB"
