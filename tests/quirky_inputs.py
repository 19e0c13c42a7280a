"""THE table of quirky step files on which the viewer, `openrlhf-traj report` and `convert` agree.

Each row: (name, file name, file bytes, expected), expected one of
- ("opens", None): read without a word (the viewer shows no problem, the tools print no notice);
- ("notice", fragment): read, with a notice holding `fragment` (the same words in the viewer and the tools);
- ("refused", fragment or None): not read; the viewer shows an error, the tools exit 2.
tests/viewer/test_viewer_quirky.py runs the viewer over it, tests/test_quirky_inputs.py the tools:
a change of what one of them accepts that the others do not follow fails one of the two.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
VIEWER_PENDING: dict = {}  # rows the viewer does not agree with yet: name -> reason (xfail)


def _token(text, entropy=None, high=False, prompt=False):
    token = {"text": text, "high_entropy": high, "entropy_score": entropy}
    if prompt:
        token["prompt"] = True
    return token


def record(step=3, **over):
    """A record of FORMAT.md (prompt "2+2=", response " 4."), with `over` replacing its fields."""
    prompt = [_token("2+2", prompt=True), _token("=", prompt=True)]
    response = [_token(" 4", 1.5, True), _token(".", 0.25)]
    rec = {
        "global_step": step, "experience_index": 0, "sample_in_exp": 0,
        "generated_tokens": prompt + response, "pure_generated_tokens": response,
        "generated_text": "2+2= 4.", "pure_generated_text": " 4.", "prompt_text": "2+2=",
        "advantages": 0.5, "return": 0.5, "info": {"reward": 1.0, "response_length": 2},
    }
    rec.update(over)
    return rec


def _json(records, **kw) -> bytes:
    return json.dumps(records, **kw).encode()


def _without(key):
    rec = record()
    del rec[key]
    return rec


def _fixture(name) -> bytes | None:
    path = SHARED / name
    return path.read_bytes() if path.is_file() else None


def _flipped(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[12] ^= 0xFF  # a flipped byte in the first block's code lengths: zlib.error
    return bytes(packed)


def _v2_token(**over):
    token = {"text": " 4", "high_entropy": True, "entropy_score": 1.5, "id": 9, "logprob": -0.7, "rollout_logprob": -0.75,
             "alternatives": [{"id": 9, "text": " 4", "logprob": -0.7}, {"id": 8, "text": " 5", "logprob": -1.2}]}
    token.update(over)
    return [token, _token(".", 0.25)]


def _bad_utf8_text() -> bytes:
    return _json([record(pure_generated_tokens=[_token("X", 1.0)])]).replace(b'"X"', b'"\xff"')


GOOD = _json([record(), record(sample_in_exp=1)])
STEP = "trajectories_step_3.json"
ROWS = [
    # what other savers and tools write
    ("the other tool's fixture", "other_tool_trajectories_step_20.json", _fixture("other_tool_trajectories_step_20.json"),
     ("opens", None)),
    ("the format-v2 fixture", "v2_trajectories_step_5.json", _fixture("v2_trajectories_step_5.json"), ("opens", None)),
    ("a record without generated_text", STEP, _json([_without("generated_text")]), ("opens", None)),
    ("token texts that do not join to the text", STEP, _json([record(pure_generated_text="five")]), ("opens", None)),
    ("generated_tokens only, prompt tokens marked", STEP, _json([_without("pure_generated_tokens")]), ("opens", None)),
    ("indented JSON, gzip-compressed", "trajectories_step_3.json.gz", gzip.compress(_json([record()], indent=2)),
     ("opens", None)),
    ("a lone surrogate in a token text", STEP, GOOD.replace(b'" 4"', b'" 4\\ud800"'), ("opens", None)),
    ("a byte that is not UTF-8 in a token text", STEP, _bad_utf8_text(), ("opens", None)),
    ("empty step file []", STEP, b"[]", ("notice", "no trajectories")),
    ("format v2 tokens and a prompt_id", STEP, _json([record(pure_generated_tokens=_v2_token(), prompt_id="a1")]),
     ("opens", None)),
    # read with repairs, and a notice
    ("a per-token advantages list", STEP, _json([record(advantages=[0.5, 1.5])]),
     ("notice", "a list where a number was expected")),
    ("NaN and Infinity literals", STEP, _json([record(advantages=float("nan"), info={"reward": float("inf")})]),
     ("notice", "NaN/Infinity literal")),
    ("a reward of 1e999", STEP, GOOD.replace(b'"reward": 1.0', b'"reward": 1e999', 1),
     ("notice", "where a number was expected")),
    ("a reward written as a string", STEP, _json([record(info={"reward": "1.5", "response_length": 2})]),
     ("notice", "a number written as a string")),
    ("a global_step written as a string", STEP, _json([record(global_step="3")]), ("notice", "global_step is not an integer")),
    ("an entropy_score that is a word", STEP,
     _json([record(pure_generated_tokens=[_token(" 4", "high", True)])]), ("notice", "an entropy_score that is not a number")),
    ("a token that is not an object", STEP, _json([record(pure_generated_tokens=[" 4", _token(".", 0.1)])]),
     ("notice", "a token that is not an object")),
    ("info that is not an object", STEP, _json([record(info=[1, 2])]), ("notice", "info is not an object")),
    ("generated_tokens that is not a list", STEP, _json([record(generated_tokens="2+2= 4.")]),
     ("notice", "generated_tokens is not a list")),
    ("a record that is not an object", STEP, _json([record(), 7]), ("notice", "not an object, skipped")),
    ("alternatives that are not a list", STEP, _json([record(pure_generated_tokens=_v2_token(alternatives="So"))]),
     ("notice", "alternatives is a string, not a list (ignored)")),
    ("a rollout_logprob of NaN", STEP, _json([record(pure_generated_tokens=_v2_token(rollout_logprob=float("nan")))]),
     ("notice", "rollout_logprob null (not finite when saved)")),
    ("a prompt_id that is an object", STEP, _json([record(prompt_id={"id": 3})]),
     ("notice", "prompt_id is an object, not a string (ignored)")),
    ("a record without a token list", STEP, _json([record(), {"global_step": 3, "info": {}}]), ("notice", "no token list")),
    # refused
    ("no record with a token list", STEP, _json([{"global_step": 3}, 4]), ("refused", "no usable trajectory record")),
    ("an object at the top level", STEP, _json({"records": [record()]}), ("refused", "expected a JSON array")),
    ("null at the top level", STEP, b"null", ("refused", "expected a JSON array")),
    ("cut-off JSON", STEP, GOOD[: len(GOOD) // 2], ("refused", "JSON")),
    ("an empty file", STEP, b"", ("refused", "empty")),
    ("only whitespace", STEP, b" \n\t ", ("refused", "empty")),
    ("flipped deflate bytes", "trajectories_step_3.json.gz", _flipped(GOOD), ("refused", "gzip data is broken")),
    ("cut-off gzip", "trajectories_step_3.json.gz", gzip.compress(GOOD)[:-12], ("refused", "gzip data is broken")),
    ("named .gz, not gzip", "trajectories_step_3.json.gz", GOOD, ("refused", "not gzip data")),
    ("gzip data that is not UTF-8", "trajectories_step_3.json.gz", gzip.compress(_bad_utf8_text()), ("refused", "UTF-8")),
    ("100,000 levels of nesting", STEP, b"[" * 100_000 + b"]" * 100_000, ("refused", None)),
]
ROWS = [row for row in ROWS if row[2] is not None]  # a fixture absent here (no shared folder)
