"""Checks a trajectory file against FORMAT.md and says what is wrong and where.

Files come from our saver, from other tools, or from anywhere: nothing here trusts a type.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from .bounded import MAX_STEP_FILE_BYTES, UnreadableFile, read_bytes


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


def _short(v) -> str:
    """A value as a message shows it: short, and without walking a value of any depth or size."""
    if isinstance(v, (list, dict)):
        return f"{'a list' if isinstance(v, list) else 'an object'} of {len(v)}"
    return repr(v[:40] if isinstance(v, str) else v)[:40]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) or x is None


def is_finite_number(x) -> bool:
    """A JSON number (not a bool) that is finite: what the format's readers take as a value."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class ParsedJSON:
    """A JSON file as read: its value, how many NaN/Infinity literals were read as null, and what
    else was made writable (``repairs``: lone surrogates, numbers too large for a double)."""

    data: object
    nonfinite_literals: int = 0
    repairs: tuple = ()
    first_literal: str = ""


def read_json(path, limit: int = MAX_STEP_FILE_BYTES, lossy_utf8: bool = False) -> ParsedJSON:
    """Parse a ``.json`` or ``.json.gz`` file through the bounded reader; ``UnreadableFile``
    (naming the file and the reason) when it cannot be. NaN/Infinity literals, which Python's
    ``json`` writes, are read as null and counted, as the viewer does. What strict JSON cannot
    write back is made writable: a lone surrogate escape becomes U+FFFD and an integer beyond
    64 bits a float (what JavaScript reads), and ``repairs`` says so. ``lossy_utf8``: bytes of a
    plain (not gzip) file that are not UTF-8 are read as U+FFFD, as a browser reads a picked file.
    """
    raw = read_bytes(path, limit)
    if not raw.strip():
        raise UnreadableFile(path, "the file is empty")
    try:
        return ParsedJSON(orjson.loads(raw))
    except orjson.JSONDecodeError as error:
        strict_error = str(error)
    # orjson refuses NaN/Infinity, lone surrogates and numbers beyond a double; Python's json
    # reads them. Anything else it refuses too.
    repairs: tuple = ()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if not lossy_utf8 or isinstance(raw, bytearray):  # bytearray: inflated gzip, which the viewer reads strictly
            raise UnreadableFile(path, f"not UTF-8 text (byte {error.start}: {error.reason})") from None
        text = raw.decode("utf-8", "replace")
        repairs = ("bytes that are not UTF-8, read as U+FFFD",)
    del raw
    literals: list[str] = []

    def constant(token: str):
        literals.append(token)
        return None

    try:
        data = json.loads(text, parse_constant=constant)
    except RecursionError:
        raise UnreadableFile(path, "not valid JSON here: nested more than about 1,000 levels deep") from None
    except ValueError:
        raise UnreadableFile(path, f"not valid JSON: {strict_error}") from None
    data, more = make_writable(data)
    return ParsedJSON(data, len(literals), repairs + more, literals[0] if literals else "")


def parse_json_file(path: Path) -> tuple[object, list[Problem]]:
    """Parse a ``.json`` or ``.json.gz`` file strictly: ``(data, problems)``, data None when the
    file cannot be read. NaN/Infinity literals and what ``read_json`` repairs are problems (strict
    JSON has none of them), and are read as it says, so the rest of the file can still be checked.
    """
    name = str(path)
    try:
        parsed = read_json(path)
    except UnreadableFile as error:
        return None, [Problem(name, None, None, error.reason)]
    problems = [Problem(name, None, None, repair) for repair in parsed.repairs]
    if parsed.nonfinite_literals:
        problems.insert(0, Problem(name, None, None, f"non-standard JSON literal {parsed.first_literal} "
                                                     f"({parsed.nonfinite_literals} in all); strict JSON writes null"))
    return parsed.data, problems


_SURROGATE = re.compile("[\ud800-\udfff]")


def writable_text(s: str) -> str:
    """``s`` with every lone surrogate (a str from a JSON escape such as ``\\ud800``, which no
    UTF-8 file can hold) as U+FFFD, the character a browser shows for it.

    Example:
        >>> writable_text("a" + chr(0xD800) + "b")
        'a\ufffdb'
    """
    return s if s.isascii() or not _SURROGATE.search(s) else _SURROGATE.sub("\ufffd", s)


def make_writable(data) -> tuple[object, tuple]:
    """``data`` (parsed by Python's json) made writable as strict JSON, and a message per kind of
    change: lone surrogates in strings (keys too) become U+FFFD, integers beyond 64 bits floats.
    Iterative, so any depth json could parse is fine."""
    counts = {"surrogates": 0, "infinite": 0}

    def fix(v):
        if isinstance(v, str):
            w = writable_text(v)
            counts["surrogates"] += w is not v
            return w
        if isinstance(v, float) and math.isinf(v):
            counts["infinite"] += 1
        elif isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
            try:
                return float(v)
            except OverflowError:
                counts["infinite"] += 1
                return math.inf if v > 0 else -math.inf
        return v

    root = [data]
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = fix(v)
                if isinstance(v, (list, dict)):
                    stack.append(v)
        else:
            for k in list(node):
                v = node[k]
                fixed_key = fix(k)
                if fixed_key is not k:
                    del node[k]
                node[fixed_key] = fix(v)
                if isinstance(v, (list, dict)):
                    stack.append(v)
    repairs = []
    if counts["surrogates"]:
        repairs.append(f"{counts['surrogates']} string(s) with a lone surrogate escape (\\ud800-\\udfff), "
                       "which is no character: read as U+FFFD")
    if counts["infinite"]:
        repairs.append(f"{counts['infinite']} number(s) too large for a double (such as 1e999), read as infinity")
    return root[0], tuple(repairs)


def validate_records(data, file: str, max_alternatives: int | None = None) -> list[Problem]:
    """Every problem of ``data`` (a parsed step file) against FORMAT.md's record shape;
    ``max_alternatives``: the run's K (``--save_top_k_alternatives``) when known.

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
        problems.extend(record_problems(rec, i, file, max_alternatives))
    return problems


_INT_FIELDS = ("global_step", "experience_index", "sample_in_exp")
_TEXT_FIELDS = ("generated_text", "pure_generated_text")
_TOKEN_FIELDS = ("generated_tokens", "pure_generated_tokens")


def record_problems(rec, i: int, file: str, max_alternatives: int | None = None) -> list[Problem]:
    """Every problem of one record (``rec``, index ``i`` of ``file``): the fields FORMAT.md requires
    and the types of those it allows (version 2's too; a token's ``alternatives`` at most
    ``max_alternatives`` when that is known)."""
    if not isinstance(rec, dict):
        return [Problem(file, i, None, f"record must be an object, got {type(rec).__name__}")]
    out = []

    def bad(field, msg):
        out.append(Problem(file, i, field, msg))

    for f in _INT_FIELDS:
        if f not in rec:
            bad(f, "missing")
        elif not _is_int(rec[f]):
            bad(f, f"must be an integer, got {_short(rec[f])}")
    for f in _TEXT_FIELDS:
        if f not in rec:
            bad(f, "missing")
        elif not isinstance(rec[f], str):
            bad(f, f"must be a string, got {type(rec[f]).__name__}")
    for f in ("advantages", "return"):
        if f not in rec:
            bad(f, "missing")
        elif not _is_number(rec[f]):
            bad(f, f"must be a number or null, got {_short(rec[f])}")
    if "prompt_id" in rec and not isinstance(rec["prompt_id"], str):
        bad("prompt_id", f"must be a string, got {_short(rec['prompt_id'])}")
    if "probe" in rec and not isinstance(rec["probe"], bool):
        bad("probe", "must be true or false")
    info = rec.get("info")
    if not isinstance(info, dict):
        bad("info", "missing" if info is None else f"must be an object, got {type(info).__name__}")
    else:
        if "reward" not in info:
            bad("info.reward", "missing")
        elif not _is_number(info["reward"]):
            bad("info.reward", f"must be a number or null, got {_short(info['reward'])}")
        if "response_length" not in info:
            bad("info.response_length", "missing")
        elif not (_is_int(info["response_length"]) or (isinstance(info["response_length"], float) and info["response_length"].is_integer())):
            bad("info.response_length", f"must be an integer, got {_short(info['response_length'])}")
    for f, text_field in zip(_TOKEN_FIELDS, _TEXT_FIELDS):
        tokens = rec.get(f)
        if tokens is None:
            bad(f, "missing")
            continue
        if not isinstance(tokens, list):
            bad(f, f"must be an array of tokens, got {type(tokens).__name__}")
            continue
        for j, tok in enumerate(tokens):
            msg = _token_problem(tok, max_alternatives)
            if msg:
                bad(f"{f}[{j}]{msg[0]}", msg[1])
                break  # one per list is enough to locate the damage
        else:
            text = rec.get(text_field)
            if isinstance(text, str) and "".join(t["text"] for t in tokens) != text:
                bad(f, f"token texts joined differ from {text_field} (FORMAT.md, 'Token texts')")
    return out


# A log-probability is <= 0; float32 rounding (a label logit taken apart from its tile) may put a
# most probable token's a hair above.
_LOGPROB_SLACK = 1e-5


def _logprob_problem(v) -> str | None:
    if not (_is_number(v) and v is not None and math.isfinite(v)):
        return f"must be a number, got {_short(v)}"
    return f"must be <= 0 (a log-probability), got {_short(v)}" if v > _LOGPROB_SLACK else None


def _alternatives_problem(alts, k: int | None):
    """(where, message) of the first thing wrong with a token's ``alternatives``, or None."""
    if not isinstance(alts, list):
        return "", f"must be an array of {{id, text, logprob}}, got {_short(alts)}"
    if k is not None and len(alts) > k:
        return "", f"has {len(alts)} alternatives, more than the run's K = {k} (--save_top_k_alternatives)"
    previous = math.inf
    for m, alt in enumerate(alts):
        if not isinstance(alt, dict):
            return f"[{m}]", f"must be an object {{id, text, logprob}}, got {_short(alt)}"
        if not _is_int(alt.get("id")):
            return f"[{m}].id", "missing" if "id" not in alt else f"must be an integer, got {_short(alt['id'])}"
        if not isinstance(alt.get("text"), str):
            return f"[{m}].text", "missing" if "text" not in alt else "must be a string"
        msg = _logprob_problem(alt.get("logprob")) if "logprob" in alt else "missing"
        if msg:
            return f"[{m}].logprob", msg
        if alt["logprob"] > previous:
            return f"[{m}].logprob", (f"{alt['logprob']:.6g} after {previous:.6g}: alternatives go most probable "
                                      "first (FORMAT.md)")
        previous = alt["logprob"]
    return None


def _token_problem(tok, max_alternatives: int | None = None):
    if not isinstance(tok, dict):
        return "", f"token must be an object, got {type(tok).__name__}"
    if not isinstance(tok.get("text"), str):
        return ".text", "missing" if "text" not in tok else "must be a string"
    if not isinstance(tok.get("high_entropy"), bool):
        return ".high_entropy", "missing" if "high_entropy" not in tok else "must be true or false"
    score = tok.get("entropy_score")
    if score is not None and not (_is_number(score) and math.isfinite(score)):
        return ".entropy_score", f"must be a number or null, got {_short(score)}"
    if "prompt" in tok and not isinstance(tok["prompt"], bool):
        return ".prompt", "must be true or false"
    if "id" in tok and not _is_int(tok["id"]):
        return ".id", "must be an integer"
    if "logprob" in tok and tok["logprob"] is not None and not _is_number(tok["logprob"]):
        return ".logprob", "must be a number or null"
    if tok.get("rollout_logprob") is not None:
        msg = _logprob_problem(tok["rollout_logprob"])
        if msg:
            return ".rollout_logprob", msg.replace("must be a number", "must be a number or null")
    if "alternatives" in tok:
        msg = _alternatives_problem(tok["alternatives"], max_alternatives)
        if msg:
            return ".alternatives" + msg[0], msg[1]
    return None
