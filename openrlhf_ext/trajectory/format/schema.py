"""Checks a trajectory file against FORMAT.md and says what is wrong and where.

Files come from our saver, from other tools, or from anywhere: nothing here trusts a type.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import orjson

# Largest file we parse in one go. A step file of 1,000 trajectories x 2,000 tokens is ~100 MB.
MAX_FILE_BYTES = 2 << 30


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: ``file``, the record index (or None), the field path."""

    file: str
    record: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.record is not None:
            where += f": record {self.record}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


class TrajectoryFormatError(ValueError):
    """Raised by ``load_trajectories`` with every problem found (``.problems``)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s):\n  {shown}{more}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) or x is None


def parse_json_file(path: Path) -> tuple[object, list[Problem]]:
    """Parse a ``.json`` or ``.json.gz`` file strictly. NaN/Infinity literals (which Python's
    ``json`` writes) are reported, and read as null, so the rest of the file can still be checked.
    """
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return None, [Problem(name, None, None, f"cannot read: {e.strerror or e}")]
    if size > MAX_FILE_BYTES:
        return None, [Problem(name, None, None, f"file is {size / 2**30:.1f} GiB, over the {MAX_FILE_BYTES >> 30} GiB limit")]
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        return None, [Problem(name, None, None, f"cannot read or decompress: {e}")]
    if not raw.strip():
        return None, [Problem(name, None, None, "file is empty")]
    try:
        return orjson.loads(raw), []
    except orjson.JSONDecodeError as e:
        strict_error = str(e)
    # orjson rejects NaN/Infinity; Python's json accepts them. Tell the two cases apart.
    import json

    literals: list[str] = []

    def _constant(token: str):
        literals.append(token)
        return None

    try:
        data = json.loads(raw.decode("utf-8", errors="strict"), parse_constant=_constant)
    except (ValueError, UnicodeDecodeError):
        return None, [Problem(name, None, None, f"not valid JSON: {strict_error}")]
    return data, [
        Problem(name, None, None, f"non-standard JSON literal {literals[0]} ({len(literals)} in all); strict JSON writes null")
    ]


def validate_records(data, file: str) -> list[Problem]:
    """Every problem of ``data`` (a parsed step file) against FORMAT.md's record shape.

    Example:
        >>> validate_records([{"global_step": 1}], "x.json")[0].field
        'experience_index'
    """
    if not isinstance(data, list):
        return [Problem(file, None, None, f"top level must be a JSON array of records, got {type(data).__name__}")]
    problems: list[Problem] = []
    for i, rec in enumerate(data):
        if len(problems) > 200:
            problems.append(Problem(file, None, None, "too many problems; stopped checking"))
            break
        problems.extend(record_problems(rec, i, file))
    return problems


_INT_FIELDS = ("global_step", "experience_index", "sample_in_exp")
_TEXT_FIELDS = ("generated_text", "pure_generated_text")
_TOKEN_FIELDS = ("generated_tokens", "pure_generated_tokens")


def record_problems(rec, i: int, file: str) -> list[Problem]:
    """Every problem of one record (``rec``, index ``i`` of ``file``): the fields FORMAT.md requires
    and the types of those it allows."""
    if not isinstance(rec, dict):
        return [Problem(file, i, None, f"record must be an object, got {type(rec).__name__}")]
    out = []

    def bad(field, msg):
        out.append(Problem(file, i, field, msg))

    for f in _INT_FIELDS:
        if f not in rec:
            bad(f, "missing")
        elif not _is_int(rec[f]):
            bad(f, f"must be an integer, got {rec[f]!r:.40}")
    for f in _TEXT_FIELDS:
        if f not in rec:
            bad(f, "missing")
        elif not isinstance(rec[f], str):
            bad(f, f"must be a string, got {type(rec[f]).__name__}")
    for f in ("advantages", "return"):
        if f not in rec:
            bad(f, "missing")
        elif not _is_number(rec[f]):
            bad(f, f"must be a number or null, got {rec[f]!r:.40}")
    info = rec.get("info")
    if not isinstance(info, dict):
        bad("info", "missing" if info is None else f"must be an object, got {type(info).__name__}")
    else:
        if "reward" not in info:
            bad("info.reward", "missing")
        elif not _is_number(info["reward"]):
            bad("info.reward", f"must be a number or null, got {info['reward']!r:.40}")
        if "response_length" not in info:
            bad("info.response_length", "missing")
        elif not (_is_int(info["response_length"]) or (isinstance(info["response_length"], float) and info["response_length"].is_integer())):
            bad("info.response_length", f"must be an integer, got {info['response_length']!r:.40}")
    for f, text_field in zip(_TOKEN_FIELDS, _TEXT_FIELDS):
        tokens = rec.get(f)
        if tokens is None:
            bad(f, "missing")
            continue
        if not isinstance(tokens, list):
            bad(f, f"must be an array of tokens, got {type(tokens).__name__}")
            continue
        for j, tok in enumerate(tokens):
            msg = _token_problem(tok)
            if msg:
                bad(f"{f}[{j}]{msg[0]}", msg[1])
                break  # one per list is enough to locate the damage
        else:
            text = rec.get(text_field)
            if isinstance(text, str) and "".join(t["text"] for t in tokens) != text:
                bad(f, f"token texts joined differ from {text_field} (FORMAT.md, 'Token texts')")
    return out


def _token_problem(tok):
    if not isinstance(tok, dict):
        return "", f"token must be an object, got {type(tok).__name__}"
    if not isinstance(tok.get("text"), str):
        return ".text", "missing" if "text" not in tok else "must be a string"
    if not isinstance(tok.get("high_entropy"), bool):
        return ".high_entropy", "missing" if "high_entropy" not in tok else "must be true or false"
    score = tok.get("entropy_score")
    if score is not None and not (_is_number(score) and math.isfinite(score)):
        return ".entropy_score", f"must be a number or null, got {score!r:.40}"
    if "prompt" in tok and not isinstance(tok["prompt"], bool):
        return ".prompt", "must be true or false"
    if "id" in tok and not _is_int(tok["id"]):
        return ".id", "must be an integer"
    if "logprob" in tok and tok["logprob"] is not None and not _is_number(tok["logprob"]):
        return ".logprob", "must be a number or null"
    return None
