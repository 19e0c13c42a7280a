"""Read per-step rollout JSONL dumps (one JSON object a line with `input`, `output`, `score`, `step`).

This is the shape trainers such as verl write with a rollout data dir: `<step>.jsonl` files of
text only, no token ids and no entropy. The viewer shows such records unmarked.

Tokens: the text is cut into word-ish chunks, each chunk being a run of spaces/tabs followed by a
run of non-space characters (" answer", " 84."), a newline on its own, or a trailing run of
spaces. That is how BPE tokens look in the viewer (a leading space, then the word), it keeps every
word hoverable, and the chunks join back to the exact text. A single token per text would render
the same characters but leave nothing to point at.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Iterator

from ..files import MANIFEST_FILE, MAX_STEP, finite_or_none
from ..format import UnreadableFile, read_bytes
from ..format.bounded import MAX_STEP_FILE_BYTES, open_regular
from ..format.schema import make_writable
from ..sampling import choose_responses
from .errors import ConvertError

# Spaces/tabs + a word, or one newline, or other whitespace: every character matches exactly one
# alternative, so "".join(chunks) == text.
_CHUNK_RE = re.compile(r"[^\S\n]*\S+|\n|[^\S\n]+")
REQUIRED_FIELDS = ("input", "output", "score", "step")


def word_chunks(text: str) -> list[str]:
    """Split `text` into viewer tokens that join back to it.

    Example:
        >>> word_chunks("12 * 7 = 84.\\nThe answer")
        ['12', ' *', ' 7', ' =', ' 84.', '\\n', 'The', ' answer']
    """
    return _CHUNK_RE.findall(text)


def find_jsonl_files(src: Path) -> list[Path]:
    """The rollout JSONL files of `src` (a file, or a folder's *.jsonl but our manifest.jsonl),
    in natural order (2.jsonl before 10.jsonl)."""
    if src.is_file():
        return [src]
    files = [p for p in src.iterdir() if p.is_file() and p.suffix == ".jsonl" and p.name != MANIFEST_FILE]

    def natural(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted(files, key=natural)


def looks_like_rollout_jsonl(path: Path) -> bool:
    """True when the first non-empty line of `path` (within its first 16 MiB) is an object with
    the rollout fields."""
    try:
        with open_regular(path) as f:
            head = f.read(16 << 20)
    except UnreadableFile:
        return False
    for line in head.splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # a line cut at 16 MiB, or not JSON
                return False
            return isinstance(row, dict) and all(k in row for k in REQUIRED_FIELDS)
    return False


def _check_row(row, path: Path, line_no: int) -> dict:
    where = f"{path}:{line_no}"
    if not isinstance(row, dict):
        raise ConvertError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise ConvertError(f"{where}: missing field(s) {', '.join(missing)} (a rollout line needs {', '.join(REQUIRED_FIELDS)})")
    for key in ("input", "output"):
        if not isinstance(row[key], str):
            raise ConvertError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
    step = row["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ConvertError(f"{where}: field 'step' must be an integer from 0 to {MAX_STEP}, got {step!r:.40}")
    score = row["score"]
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise ConvertError(f"{where}: field 'score' must be a number or null, got {score!r}")
    return row


def read_jsonl_steps(path: Path) -> Iterator[tuple[int, list[dict]]]:
    """(step, rows) for each step in one JSONL file, in order of first appearance.

    A broken line raises ConvertError naming `path:line`. Non-finite numbers (NaN) are accepted
    as Python's json reads them and written as null later.
    """
    by_step: dict[int, list[dict]] = {}
    try:
        text = read_bytes(path, MAX_STEP_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConvertError(f"{path}: not UTF-8 text: {error}") from error
    except UnreadableFile as error:
        raise ConvertError(str(error)) from error
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ConvertError(f"{path}:{line_no}: not valid JSON: {type(error).__name__}: {str(error)[:200]}") from None
        row, repairs = make_writable(row)  # lone surrogates (\ud800) as U+FFFD: strict JSON cannot hold them
        for repair in repairs:
            warnings.warn(f"{path}:{line_no}: {repair}", stacklevel=2)
        row = _check_row(row, path, line_no)
        by_step.setdefault(row["step"], []).append(row)
    yield from by_step.items()


LABEL_FIELDS = ("label", "gts", "ground_truth", "answer")


def _text_token(text: str, prompt: bool = False) -> dict:
    token = {"text": text, "high_entropy": False, "entropy_score": None}
    if prompt:
        token["prompt"] = True
    return token


def jsonl_step_records(step: int, rows: list[dict], limit: int | None = None, sampling: str = "first", seed: int = 0):
    """(records iterator, step_info) of one step of rollout JSONL lines.

    The records have the keys build_record writes, but no ids, entropies or marks (a text dump
    has none, and build_record works from token ids). Lines with the same `input` form a prompt
    group (`group_index`); a `label`/`gts`/`ground_truth`/`answer` field becomes `label`; other
    scalar fields go into `info`. `limit` lines become records, picked as the saver picks
    responses (`sampling`, seeded with `seed` + the step); `step_info` (the manifest entry's
    numbers) is over all the step's lines.

    Example:
        >>> lines = [{"input": "1+1=", "output": " 2", "score": 1.0, "step": 3},
        ...          {"input": "1+1=", "output": " 3", "score": float("nan"), "step": 3}]
        >>> records, info = jsonl_step_records(3, lines)
        >>> [(r["pure_generated_text"], r["info"]["reward"], r["group_index"]) for r in records]
        [(' 2', 1.0, 0), (' 3', None, 0)]
        >>> info["num_responses"], info["rewards"]
        (2, [1.0, None])
    """
    rewards = [finite_or_none(row["score"]) for row in rows]
    kept = range(len(rows))
    if limit is not None:  # the saver's choice: lines with the same input are one prompt group
        kept = choose_responses([row["input"] for row in rows], rewards, limit, sampling, seed=seed + step,
                                forks=[0] * len(rows))
    groups: dict[str, int] = {}
    group_of = [groups.setdefault(row["input"], len(groups)) for row in rows]

    def records():
        for index in kept:
            row = rows[index]
            prompt_tokens = [_text_token(t, prompt=True) for t in word_chunks(row["input"])]
            tokens = [_text_token(t) for t in word_chunks(row["output"])]
            info = {
                k: (finite_or_none(v) if isinstance(v, float) else v)
                for k, v in row.items()
                if k not in REQUIRED_FIELDS and k not in LABEL_FIELDS and isinstance(v, (str, int, float, bool))
            }
            info["reward"] = rewards[index]
            info["response_length"] = len(tokens)
            label = next((row[k] for k in LABEL_FIELDS if isinstance(row.get(k), str)), None)
            yield {
                "global_step": step,
                "experience_index": 0,
                "sample_in_exp": index,
                "generated_tokens": prompt_tokens + tokens,
                "pure_generated_tokens": tokens,
                "generated_text": row["input"] + row["output"],
                "pure_generated_text": row["output"],
                "advantages": None,
                "return": None,
                "info": info,
                "prompt_text": row["input"],
                "label": label,
                "group_index": group_of[index],
                "high_entropy_threshold": None,
                "high_entropy_token_ratio": None,
            }

    step_info = {
        "num_responses": len(rows),
        "entropies": None,  # a text dump has none
        "num_response_tokens": sum(len(word_chunks(row["output"])) for row in rows),
        "rewards": rewards,
        "threshold": None,
    }
    return records(), step_info
