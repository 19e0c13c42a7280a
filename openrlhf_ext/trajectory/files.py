"""Files of a trajectory run (FORMAT.md), as the saver writes them: file names, atomic writes,
strict JSON, the manifest, the summary and the npz trace.

Every file is written to a temporary file in the same folder, flushed, fsynced and moved over the
target with ``os.replace``, so a reader never sees half a file and a crash loses at most the file
being written. JSON is strict: NaN and infinities become ``null``.

Reading and checking files is ``openrlhf_ext.trajectory.format``'s job; this module reads only
what a writer must (the manifest it rewrites, the summary whose ``created_at`` it keeps).
"""
from __future__ import annotations

import io
import math
import os
import re
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

FORMAT_VERSION = 2  # of FORMAT.md; readers must keep opening version 1
# summary.json's "generator": how our tools tell a summary this package wrote from another
# trainer's (which carry format_version 2 too, with other fields). Version 1 summaries had none.
GENERATOR = "openrlhf_ext"

# ----------------------------------------------------------------------------- file names
# The one place that knows them: writers, readers and the tools all ask here.

# trajectories_step_12.json[.gz], and other tools' names such as other_tool_trajectories_step_20.json.
STEP_FILE_RE = re.compile(r"^(?:.*_)?trajectories_step_(\d+)\.json(\.gz)?$")
NPZ_FILE_RE = re.compile(r"^step_(\d+)\.npz$")
PROBE_FILE_RE = re.compile(r"^probes_step_(\d+)\.json(\.gz)?$")
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
STEPS_DIR = "steps"  # the npz traces' folder inside a run's trajectories folder
MAX_STEP = 2**63 - 1  # the largest step a file can name: a JSON integer every reader's int64 holds


def step_file_name(global_step: int) -> str:
    """``trajectories_step_<N>.json``, N not zero-padded (FORMAT.md).

    Example:
        >>> step_file_name(12), step_of_file_name("trajectories_step_12.json.gz")
        ('trajectories_step_12.json', 12)
    """
    return f"trajectories_step_{int(global_step)}.json"


def probe_file_name(global_step: int) -> str:
    """``probes_step_<N>.json``: the responses to the run's probe prompts at step N (FORMAT.md v2).

    Example:
        >>> probe_file_name(5), probe_step_of_file_name("probes_step_5.json")
        ('probes_step_5.json', 5)
    """
    return f"probes_step_{int(global_step)}.json"


def probe_step_of_file_name(name: str) -> int | None:
    """The step N of a probe file's name (``probes_step_N.json[.gz]``), else None."""
    match = PROBE_FILE_RE.match(name)
    return int(match.group(1)) if match else None


def npz_file_name(global_step: int) -> str:
    """``step_<NNNNNN>.npz`` inside the ``steps/`` folder.

    Example:
        >>> npz_file_name(3), npz_step_of_file_name("step_000003.npz")
        ('step_000003.npz', 3)
    """
    return f"step_{int(global_step):06d}.npz"


def step_of_file_name(name: str) -> int | None:
    """The step N of a step file's name (``[..._]trajectories_step_N.json[.gz]``), else None."""
    match = STEP_FILE_RE.match(name)
    return int(match.group(1)) if match else None


def npz_step_of_file_name(name: str) -> int | None:
    """The step N of an npz trace's name (``step_N.npz``), else None."""
    match = NPZ_FILE_RE.match(name)
    return int(match.group(1)) if match else None


def _list_by_step(folder, step_of) -> list[tuple[int, Path]]:
    found = []
    for p in Path(folder).iterdir():
        step = step_of(p.name)
        if step is not None and p.is_file():
            found.append((step, p))
    return sorted(found, key=lambda sp: (sp[0], sp[1].name))


def list_step_files(folder) -> list[tuple[int, Path]]:
    """``(step, path)`` of every step file in ``folder``, by step number."""
    return _list_by_step(folder, step_of_file_name)


def list_probe_files(folder) -> list[tuple[int, Path]]:
    """``(step, path)`` of every probe file (``probes_step_N.json``) in ``folder``, by step number."""
    return _list_by_step(folder, probe_step_of_file_name)


def list_npz_files(folder) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_N.npz`` in ``folder`` (a ``steps/`` folder), by step number."""
    return _list_by_step(folder, npz_step_of_file_name)


# ----------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_bytes(p, b"[]")
        >>> p.read_bytes()
        b'[]'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would have, or
        # keep the old file's, so colleagues who could read the run's files still can.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


_UMASK: int | None = None


def _umask() -> int:
    """The process umask, read on the first write that needs it (not at import).

    Linux says it in /proc/self/status; elsewhere the only way to read it is to set it and set it
    back, which is done once, so the window in which another thread's file could get the wrong
    mode is one pair of system calls in the run.
    """
    global _UMASK
    if _UMASK is None:
        _UMASK = _umask_from_proc()
        if _UMASK is None:
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem, and not needed
    # for readers to see a whole file, so failures are ignored.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- strict JSON

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json_default(obj):
    # torch tensors and numpy scalars/arrays that orjson does not take natively.
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):
        obj = obj.detach().cpu()
        return obj.item() if obj.dim() == 0 else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def dumps_strict_json(obj, indent: bool = False) -> bytes:
    """Serialise to strict JSON bytes: NaN and +-inf become ``null`` (orjson's rule), numpy and
    torch values are converted.

    Example:
        >>> dumps_strict_json({"a": float("nan"), "b": [1.5, float("inf")]})
        b'{"a":null,"b":[1.5,null]}'
    """
    opts = _ORJSON_OPTS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(obj, default=_json_default, option=opts)


def finite_or_none(x) -> float | None:
    """``x`` as a python float, or None when it is not a finite number: how strict JSON writes a
    value (FORMAT.md: "a value that is not finite is written as null").

    Example:
        >>> finite_or_none(np.float32(1.5)), finite_or_none(float("nan")), finite_or_none("inf"), finite_or_none(None)
        (1.5, None, None, None)
    """
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _records_bytes(records) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    buffer.write(b"[")
    count = 0
    for record in records:  # serialised as they come: a generator's records are never all alive
        buffer.write(b",\n" if count else b"\n")
        buffer.write(dumps_strict_json(record))
        count += 1
    buffer.write(b"\n]\n" if count else b"]\n")
    return buffer.getvalue(), count


def dumps_records(records) -> bytes:
    """A JSON array with one record per line: strict, compact, and still greppable line by line.
    ``records`` may be any iterable, a generator included."""
    return _records_bytes(records)[0]


def write_records(path, records) -> int:
    """Write a step file of ``records`` (any iterable) atomically; returns how many were written."""
    data, count = _records_bytes(records)
    atomic_write_bytes(path, data)
    return count


# ----------------------------------------------------------------------------- manifest / summary / npz


def parse_manifest(data: bytes) -> list[dict]:
    """The entries of a manifest's bytes; a torn or foreign line is skipped rather than fatal.
    The one rule of what a manifest line is: the writer and every reader use it."""
    entries = []
    for line in data.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def read_manifest(path) -> list[dict]:
    """The entries of the manifest a writer rewrites (``[]`` when there is none). Readers of
    files that may come from anywhere read it through ``format``'s bounded reader instead."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():  # a FIFO would block the writer, a device never end
        raise OSError(f"{path}: not a regular file")
    return parse_manifest(path.read_bytes())


def upsert_manifest(path, entry: dict, repair: bool = False) -> None:
    """Put ``entry`` in manifest.jsonl, replacing an older entry for the same ``global_step``.

    The whole file is rewritten atomically, sorted by step (it holds one short line per saved
    step), so a resumed run that saves a step again leaves one line per step, in step order.
    ``repair``: also add a line for each step file of the folder that has none (a manifest write
    that failed after its step file, on a full disk), marked ``"repaired": true``: the step's
    numbers over all its responses died with the failed write, so the line holds what the file
    tells (its name and size).
    """
    path = Path(path)
    step = entry.get("global_step")
    entries = [e for e in read_manifest(path) if e.get("global_step") != step]
    entries.append(entry)
    if repair:
        listed = {e.get("global_step") for e in entries if isinstance(e.get("global_step"), int)}
        for s, p in list_step_files(path.parent):
            if s not in listed and p.name == step_file_name(s):
                entries.append({"global_step": s, "file": p.name, "file_bytes": p.stat().st_size, "repaired": True,
                                "created_at": utc_now()})
    entries.sort(key=lambda e: e.get("global_step") if isinstance(e.get("global_step"), int) else -1)
    atomic_write_bytes(path, b"".join(dumps_strict_json(e) + b"\n" for e in entries))


def forget_steps_after(folder, step: int) -> list[str]:
    """Remove what a run folder holds for the steps after ``step``: step files, npz traces and
    manifest lines. A run resumed from step ``step``'s checkpoint redoes those steps; forgetting
    them first leaves each step once in the folder, with no gaps. Returns the removed paths.

    Manifest lines this does not understand are kept: they are not ours to drop.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for s, p in list_step_files(folder) + list_probe_files(folder) if s > step]
    if (folder / STEPS_DIR).is_dir():
        removed += [p for s, p in list_npz_files(folder / STEPS_DIR) if s > step]
    for p in removed:
        p.unlink()
    manifest = folder / MANIFEST_FILE
    if manifest.exists():
        if not manifest.is_file():  # a FIFO would block the resume, a device never end
            raise OSError(f"{manifest}: not a regular file")
        kept = []
        for line in manifest.read_bytes().splitlines():
            try:
                entry_step = orjson.loads(line).get("global_step")
            except (orjson.JSONDecodeError, AttributeError):
                entry_step = None
            if not (isinstance(entry_step, int) and entry_step > step):
                kept.append(line + b"\n")
        atomic_write_bytes(manifest, b"".join(kept))
    return [str(p) for p in removed]


def utc_now() -> str:
    """The timestamps of manifests and summaries: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_summary(folder, fields: dict, created_at: str | None = None) -> None:
    """Rewrite ``summary.json`` after a step: ``format_version``, ``generator``, ``created_at``
    (kept from the existing summary unless given), ``updated_at``, and ``latest_step`` /
    ``num_steps_written`` from the manifest, followed by ``fields`` (model, tokenizer, flags, ...)."""
    folder = Path(folder)
    path = folder / SUMMARY_FILE
    if created_at is None:
        try:
            previous = orjson.loads(path.read_bytes()) if path.is_file() else {}
        except (OSError, orjson.JSONDecodeError):  # a broken summary is rewritten, not fatal
            previous = {}
        created_at = previous.get("created_at") if isinstance(previous, dict) else None
    steps = [e["global_step"] for e in read_manifest(folder / MANIFEST_FILE) if isinstance(e.get("global_step"), int)]
    summary = {
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "created_at": created_at or utc_now(),
        "updated_at": utc_now(),
        "latest_step": max(steps, default=None),
        "num_steps_written": len(steps),
        **fields,
    }
    atomic_write_bytes(path, dumps_strict_json(summary, indent=True))


def is_our_summary(summary) -> bool:
    """True for a summary.json this package wrote: ``generator`` is ours (version 2 on), or
    ``format_version`` is 1 (our version 1 summaries had no generator, and no other trainer's
    summary says version 1). Other trainers' summaries (format_version 2, other fields) are not.

    Example:
        >>> is_our_summary({"format_version": 2, "generator": GENERATOR}), is_our_summary({"format_version": 1})
        (True, True)
        >>> is_our_summary({"format_version": 2, "step": 10})
        False
    """
    if not isinstance(summary, dict):
        return False
    version = summary.get("format_version")
    return summary.get("generator") == GENERATOR or (version == 1 and not isinstance(version, bool))


def write_npz(path, arrays: dict) -> None:
    """A compressed ``.npz`` (what ``np.savez_compressed`` writes, readable by ``np.load``), built
    in memory and written atomically. Deflate level 1: entropies and ids compress nearly as well
    as at the default level 6, several times faster, and this runs inside the training step."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())

