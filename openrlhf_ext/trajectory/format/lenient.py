"""Reading a step file as the viewer reads it: every file the viewer opens, with the notices it
gives, and the records it shows in FORMAT.md's shape. ``report``, ``convert`` and ``stats`` read
step files here; ``validate`` and ``load_trajectories`` keep to the strict schema (schema.py).

The rules are the viewer's (``viewer/render_trajectories.html``: ``ingestTrajectories``,
``normRecord``, ``tokenColumns``, ``num``), rule for rule, and tests/quirky_inputs.py holds the
table of inputs on which the viewer, ``report`` and ``convert`` must agree:
- refused (``UnreadableFile``): what cannot be read (see bounded.py and ``read_json``), a top
  level that is not an array, an array of which no record has a token list;
- read with a notice: NaN/Infinity literals (read as null), records skipped (not an object, no
  token list), and values repaired: a list where a number was expected (its mean), a number
  written as a string, a token that is not an object, a text or entropy of the wrong type, format
  v2's values of the wrong type (``alternatives`` that are not a list or hold malformed entries, a
  ``rollout_logprob`` that is null or not a number, a ``prompt_id`` that is not a string), ...;
  ``[]`` is a step with no trajectories, which the saver writes for an empty batch;
- read as it is: what the viewer does not need, such as a missing ``generated_text`` or token
  texts that do not join to it (``validate`` reports those).

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "trajectories_step_3.json"
    >>> tokens = [{"text": " 4", "high_entropy": True, "entropy_score": 1.5}]
    >>> _ = path.write_text(json.dumps([{"pure_generated_tokens": tokens, "advantages": [0.5, 1.5]}, 7]))
    >>> read = read_lenient(path)
    >>> for notice in read.notices:
    ...     print(notice)
    /.../trajectories_step_3.json: record 0: advantages: a list where a number was expected (its mean is used)
    /.../trajectories_step_3.json: record 1: not an object, skipped
    >>> record = read.records[0]
    >>> record["global_step"], record["advantages"], record["pure_generated_text"], read.kept
    (3, 1.0, ' 4', [0])
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .bounded import UnreadableFile
from .schema import Problem, is_finite_number, read_json

NO_RECORDS = "no usable trajectory record (each needs a generated_tokens or pure_generated_tokens list)"
_FILE_STEP = re.compile(r"step_(\d+)")  # the viewer's: a step in the file's name


@dataclass
class LenientFile:
    """One step file as the viewer reads it.

    ``data``: the file's array as parsed (lone surrogates as U+FFFD, so it writes back as strict
    JSON); ``kept``: the index in ``data`` of each record the viewer shows, ``steps`` its step;
    ``records``: those records in FORMAT.md's shape (None unless asked for); ``notices``: what the
    viewer would say, one per kind, at its first record; ``step``: the step in the file's name.
    """

    path: Path
    data: list
    step: int | None
    kept: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    records: list[dict] | None = None
    notices: list[Problem] = field(default_factory=list)


def read_lenient(path, records: bool = True) -> LenientFile:
    """Read ``path`` as the viewer does; ``UnreadableFile`` (naming the file and why) when the
    viewer would refuse it. ``records=False`` skips building the FORMAT.md records (a report
    embeds the file's own data)."""
    path = Path(path)
    parsed = read_json(path, lossy_utf8=True)  # a browser reads a picked file's bytes that way
    value = parsed.data
    if not isinstance(value, list):
        raise UnreadableFile(path, f"expected a JSON array of trajectory records, found {_what(value)}")
    match = _FILE_STEP.search(path.name)
    out = LenientFile(path, value, int(match.group(1)) if match else None, records=[] if records else None)
    if parsed.nonfinite_literals:
        out.notices.append(Problem(str(path), None, None, f"{parsed.nonfinite_literals} NaN/Infinity literal(s) read as "
                                   "null (Python's json writes them; the format asks for null)"))
    if not value:
        out.notices.append(Problem(str(path), None, None, (
            f"step {out.step} has no trajectories (an empty array, as the saver writes for an empty batch)"
            if out.step is not None else
            "holds no trajectory records (an empty array) and its name has no step number: nothing to show")))
        return out
    issues: dict[str, list] = {}  # message -> [first record, field, how many records]
    for ri, rec in enumerate(value):
        seen: set[str] = set()

        def issue(where, message, ri=ri, seen=seen):
            if message in seen:
                return
            seen.add(message)
            if message in issues:
                issues[message][2] += 1
            else:
                issues[message] = [ri, where, 1]

        shown = _record(rec, ri, out.step, issue, records)
        if shown is not None:
            out.kept.append(ri)
            out.steps.append(shown[0])
            if records:
                out.records.append(shown[1])
    if not out.kept:
        raise UnreadableFile(path, NO_RECORDS)
    for message, (ri, where, count) in issues.items():
        more = f" (and {count - 1} more record(s))" if count > 1 else ""
        label = (where or "").rsplit(".", 1)[-1] + ": "
        shown = message[len(label):] if message.startswith(label) else message  # the field says it
        out.notices.append(Problem(str(path), ri, where, shown + more))
    return out


def read_lenient_files(files, records: bool = True):
    """``(path, LenientFile or None, problem or None)`` for each of ``files``, one at a time (a
    caller that drops each before the next holds one file's records at most)."""
    for path in files:
        try:
            yield path, read_lenient(path, records), None
        except UnreadableFile as error:
            yield path, None, Problem(str(path), None, None, error.reason)


# ----------------------------------------------------------------------------- the viewer's rules

def _what(v) -> str:  # the viewer's what()
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    return "a " + _typeof(v)


def _typeof(v) -> str:  # JavaScript's typeof of a parsed JSON value
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return "string" if isinstance(v, str) else "object"


def _is_integer(v) -> bool:  # Number.isInteger
    return is_finite_number(v) and (isinstance(v, int) or v.is_integer())


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PREFIXED = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")


def _js_number(s: str):
    """JavaScript's Number(s) when it is finite, else None."""
    s = s.strip()
    if _DECIMAL.fullmatch(s):
        value = float(s)
        return value if math.isfinite(value) else None
    return int(s, 0) if _PREFIXED.fullmatch(s) else None


def _num(v, issue):
    """The viewer's ``num``: a number where the format says number, repaired with a notice."""
    if is_finite_number(v):
        return v
    if v is None:
        return None
    if isinstance(v, list):
        issue("a list where a number was expected (its mean is used)")
        values = [x for x in v if is_finite_number(x)]
        return math.fsum(values) / len(values) if values else None
    if isinstance(v, str) and v.strip() and _js_number(v) is not None:
        issue("a number written as a string")
        return _js_number(v)
    issue(f"a {_typeof(v)} where a number was expected")
    return None


def _js_string(v) -> str:  # String(v) of a token text that is not a string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else (
            str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return ",".join("" if x is None else _js_string(x) if not isinstance(x, str) else x for x in v)
    return "[object Object]"


def _is_prompt(t) -> bool:
    return isinstance(t, dict) and t.get("prompt") is True


def _split(rec, issue):
    """(response tokens, prompt tokens, the response's list name), or None without a token list."""
    gen, pure = rec.get("generated_tokens"), rec.get("pure_generated_tokens")
    if gen is not None and not isinstance(gen, list):
        issue("generated_tokens", "generated_tokens is not a list")
    if pure is not None and not isinstance(pure, list):
        issue("pure_generated_tokens", "pure_generated_tokens is not a list")
    gen = gen if isinstance(gen, list) else None
    pure = pure if isinstance(pure, list) else None
    if gen is None and pure is None:
        issue(None, "no token list, skipped")
        return None
    if pure is not None:
        if gen is None:
            return pure, [], "pure_generated_tokens"
        # Prompt tokens come first: the leading run marked `prompt`, else what precedes the response.
        k = 0
        while k < len(gen) and _is_prompt(gen[k]):
            k += 1
        prompt = gen[:k] if k else gen[: len(gen) - len(pure)] if len(gen) > len(pure) else []
        return pure, prompt, "pure_generated_tokens"
    prompt = [t for t in gen if _is_prompt(t)]
    return ([t for t in gen if not _is_prompt(t)] if prompt else gen), prompt, "generated_tokens"


MAX_ALTERNATIVES = 32  # the viewer's MAX_ALTS: alternatives kept per token


def _rollout_logprob(t, where: str, issue):
    """A token's rollout_logprob (v2) when finite, with the viewer's notes otherwise."""
    if "rollout_logprob" not in t:
        return None
    v = t["rollout_logprob"]
    if is_finite_number(v):
        return v
    issue(f"{where}.rollout_logprob", "rollout_logprob null (not finite when saved): no mismatch for that token"
          if v is None else f"a rollout_logprob that is {_what(v)}, not a number (ignored)")
    return None


def _alternatives(v, where: str, issue):
    """The viewer's ``alternatives``: the well-formed entries (at most 32) most probable first, as
    FORMAT.md writes them (``id`` only where it is an integer); None for a value that is no list."""
    if v is None:
        return None
    if not isinstance(v, list):
        issue(f"{where}.alternatives", f"alternatives is {_what(v)}, not a list (ignored)")
        return None
    out = []
    for a in v:
        if len(out) == MAX_ALTERNATIVES:
            issue(f"{where}.alternatives", f"more than {MAX_ALTERNATIVES} alternatives on a token (the first "
                  f"{MAX_ALTERNATIVES} kept)")
            break
        if not isinstance(a, dict) or not isinstance(a.get("text"), str) or not is_finite_number(a.get("logprob")):
            issue(f"{where}.alternatives", "an alternative that is not {id, text, logprob} (ignored)")
            continue
        alt = {"id": a["id"]} if _is_integer(a.get("id")) and isinstance(a["id"], int) else {}
        out.append({**alt, "text": a["text"], "logprob": a["logprob"]})
    out.sort(key=lambda a: -a["logprob"])  # stable, as the viewer's sort
    return out or None


def _tokens(tokens, where: str, issue, build: bool, prompt: bool = False) -> list[dict] | None:
    """The viewer's ``tokenColumns``: each token's text, entropy and mark, with its notices; the
    FORMAT.md tokens when ``build``."""
    out = [] if build else None
    for j, t in enumerate(tokens):
        if not isinstance(t, dict):
            issue(f"{where}[{j}]", "a token that is not an object")
            if build:
                out.append({"text": t if isinstance(t, str) else "", "high_entropy": False, "entropy_score": None})
            continue
        text, score = t.get("text"), t.get("entropy_score")
        if not isinstance(text, str):
            if text is not None:
                issue(f"{where}[{j}].text", "a token text that is not a string")
            text = "" if text is None else _js_string(text)
        if not is_finite_number(score):
            if score is not None:
                issue(f"{where}[{j}].entropy_score", "an entropy_score that is not a number")
            score = None
        rollout = _rollout_logprob(t, f"{where}[{j}]", issue)
        alternatives = _alternatives(t.get("alternatives"), f"{where}[{j}]", issue)
        if build:
            token = {"text": text, "high_entropy": t.get("high_entropy") is True, "entropy_score": score}
            if isinstance(t.get("id"), int) and not isinstance(t["id"], bool) and t["id"] >= 0:
                token["id"] = t["id"]
            if is_finite_number(t.get("logprob")):
                token["logprob"] = t["logprob"]
            if rollout is not None:
                token["rollout_logprob"] = rollout
            if alternatives is not None:
                token["alternatives"] = alternatives
            if prompt:
                token.update(prompt=True, high_entropy=False, entropy_score=None)
            out.append(token)
    return out


def _prompt_id(rec, issue):
    """The viewer's ``recordPromptId``: a string, or a number's text; a note for anything else."""
    v = rec.get("prompt_id")
    if v is None or isinstance(v, str):
        return v
    if is_finite_number(v):
        return _js_string(v)
    issue("prompt_id", f"prompt_id is {_what(v)}, not a string (ignored)")
    return None


def _record(rec, ri: int, file_step, issue, build: bool):
    """(step, FORMAT.md record or None) of one record the viewer shows; None when it skips it."""
    if not isinstance(rec, dict):
        issue(None, "not an object, skipped")
        return None
    split = _split(rec, issue)
    if split is None:
        return None
    resp, prompt_tokens, where = split
    resp = _tokens(resp, where, issue, build)
    prompt = _tokens(prompt_tokens, "generated_tokens", issue, build, prompt=True)
    info = rec.get("info")
    if info is not None and not isinstance(info, dict):
        issue("info", "info is not an object")
        info = None
    info = info or {}
    step = rec.get("global_step")
    if not _is_integer(step):
        if step is not None:
            issue("global_step", "global_step is not an integer")
        n = _num(step, lambda m: issue("global_step", m))
        step = n if _is_integer(n) else file_step if file_step is not None else 0
    step = int(step) if -(2**63) <= step < 2**63 else float(step)  # past 64 bits, as JavaScript reads it

    def number(key, value, label=None):
        return _num(value, lambda m: issue(key, f"{label or key}: {m}"))

    reward = number("info.reward", info["reward"] if "reward" in info else rec.get("reward"), "reward")
    advantages, returns = number("advantages", rec.get("advantages")), number("return", rec.get("return"))
    length = number("info.response_length", info.get("response_length"), "response_length")
    prompt_id = _prompt_id(rec, issue)
    if not build:
        return step, None
    return step, _format_record(rec, ri, step, resp, prompt, info, reward, advantages, returns, length, prompt_id)


def _format_record(rec, ri, step, resp, prompt, info, reward, advantages, returns, length, prompt_id) -> dict:
    """The record in FORMAT.md's shape: what convert writes, what stats counts."""
    resp_text = "".join(t["text"] for t in resp)
    prompt_joined = "".join(t["text"] for t in prompt)
    prompt_text = rec.get("prompt_text")
    if not isinstance(prompt_text, str):  # the viewer's recordPrompt
        g, p = rec.get("generated_text"), rec.get("pure_generated_text")
        prompt_text = prompt_joined if prompt else g[: len(g) - len(p)] if (
            isinstance(g, str) and isinstance(p, str) and g.endswith(p)) else ""

    def integer(v, default):
        return int(v) if _is_integer(v) else default

    record = {
        "global_step": step,
        "experience_index": integer(rec.get("experience_index"), 0),
        "sample_in_exp": integer(rec.get("sample_in_exp"), ri),
        "generated_tokens": prompt + resp,
        "pure_generated_tokens": resp,
        "generated_text": prompt_joined + resp_text,
        "pure_generated_text": resp_text,
        "advantages": advantages,
        "return": returns,
        "info": {**{k: v for k, v in info.items() if k not in ("reward", "response_length")},
                 "reward": reward, "response_length": integer(length, len(resp))},
        "prompt_text": prompt_text,
    }
    group = rec.get("group_index")
    optional = {
        "label": rec.get("label"),
        "group_index": group if is_finite_number(group) or isinstance(group, str) else None,
        "high_entropy_threshold": rec.get("high_entropy_threshold") if is_finite_number(rec.get("high_entropy_threshold")) else None,
        "high_entropy_token_ratio": rec.get("high_entropy_token_ratio") if is_finite_number(rec.get("high_entropy_token_ratio")) else None,
        "prompt_id": prompt_id,
        "probe": True if rec.get("probe") is True else None,
    }
    record.update((k, v) for k, v in optional.items() if v is not None)
    return record
