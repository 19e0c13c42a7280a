"""Files of a trajectory run (FORMAT.md): atomic writes, strict JSON, the manifest, the npz trace.

Writers: every file is written to a temporary file in the same folder, flushed, fsynced and moved
over the target with ``os.replace``, so a reader never sees half a file and a crash loses at most
the file being written. JSON is strict: NaN and infinities become ``null``.

Readers (``load_trajectories``, ``read_manifest``) treat every file as possibly hostile or broken
and say what is wrong and where.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

FORMAT_VERSION = 1  # of FORMAT.md; readers must keep opening version 1
STEP_FILE_RE = re.compile(r"^(?:.*_)?trajectories_step_(\d+)\.json(\.gz)?$")
NPZ_FILE_RE = re.compile(r"^step_(\d+)\.npz$")


def step_file_name(global_step: int) -> str:
    """``trajectories_step_<N>.json``, N not zero-padded (FORMAT.md)."""
    return f"trajectories_step_{int(global_step)}.json"


def npz_file_name(global_step: int) -> str:
    """``step_<NNNNNN>.npz`` inside the ``steps/`` folder."""
    return f"step_{int(global_step):06d}.npz"


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


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


# ----------------------------------------------------------------------------- manifest / npz


def read_manifest(path) -> list[dict]:
    """The manifest's entries; a torn or foreign line is skipped rather than fatal."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def upsert_manifest(path, entry: dict) -> None:
    """Add ``entry`` to manifest.jsonl, replacing an older entry for the same ``global_step``.

    A resumed run that saves a step again therefore leaves one line per step, in step order. The
    whole file is rewritten atomically (it holds one short line per saved step).
    """
    step = entry.get("global_step")
    entries = [e for e in read_manifest(path) if e.get("global_step") != step]
    entries.append(entry)
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
    removed = [p for s, p in list_step_files(folder) if s > step]
    steps_dir = folder / "steps"
    if steps_dir.is_dir():
        removed += [p for p in steps_dir.iterdir() if (m := NPZ_FILE_RE.match(p.name)) and int(m.group(1)) > step]
    for p in removed:
        p.unlink()
    manifest = folder / "manifest.jsonl"
    if manifest.exists():
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
    """Rewrite ``summary.json`` after a step: ``format_version``, ``created_at`` (kept from the
    existing summary unless given), ``updated_at``, and ``latest_step``/``num_steps_written`` from
    the manifest, followed by ``fields`` (model, tokenizer, flags, ...)."""
    folder = Path(folder)
    path = folder / "summary.json"
    if created_at is None:
        try:
            previous = orjson.loads(path.read_bytes()) if path.exists() else {}
        except (OSError, orjson.JSONDecodeError):  # a broken summary is rewritten, not fatal
            previous = {}
        created_at = previous.get("created_at") if isinstance(previous, dict) else None
    steps = [e["global_step"] for e in read_manifest(folder / "manifest.jsonl") if isinstance(e.get("global_step"), int)]
    summary = {
        "format_version": FORMAT_VERSION,
        "created_at": created_at or utc_now(),
        "updated_at": utc_now(),
        "latest_step": max(steps, default=None),
        "num_steps_written": len(steps),
        **fields,
    }
    atomic_write_bytes(path, dumps_strict_json(summary, indent=True))


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


def list_step_files(folder) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``trajectories_step_N.json[.gz]`` in ``folder``, by step number."""
    found = []
    for p in Path(folder).iterdir():
        m = STEP_FILE_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, key=lambda sp: (sp[0], sp[1].name))


# ----------------------------------------------------------------------------- reading


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
        >>> recs = load_trajectories("runs/demo/trajectories")          # doctest: +SKIP
        >>> recs[0]["pure_generated_text"], recs[0]["info"]["reward"]   # doctest: +SKIP
    """
    from .schema import TrajectoryFormatError, _record_problems, parse_json_file, validate_records

    records: list[dict] = []
    problems = []
    for file in resolve_step_files(path):
        data, parse_problems = parse_json_file(file)
        problems.extend(parse_problems)
        if data is None:
            continue
        file_problems = validate_records(data, str(file))
        problems.extend(file_problems)
        if not isinstance(data, list):
            continue
        if strict:
            records.extend(data)
        else:
            records.extend(r for i, r in enumerate(data) if not _record_problems(r, i, str(file)))
    if strict and problems:
        raise TrajectoryFormatError(problems)
    return records
