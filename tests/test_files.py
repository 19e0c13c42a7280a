"""Files: strict JSON, atomic writes that survive a kill, and readers that say what is wrong."""
import json
import math
import signal
import subprocess
import sys
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory import TrajectoryFormatError, load_trajectories
from openrlhf_ext.trajectory.files import atomic_write_bytes, dumps_records, dumps_strict_json, upsert_manifest, read_manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _replace_non_finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_replace_non_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _replace_non_finite(v) for k, v in x.items()}
    return x


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_strict_json_round_trips_with_non_finite_as_null(value):
    data = dumps_strict_json(value)
    # Python's json accepts NaN literals by default; forbid them to prove none are written.
    def no_constants(tok):
        raise AssertionError(f"non-standard literal {tok} written")
    assert json.loads(data, parse_constant=no_constants) == _replace_non_finite(value)


def test_records_file_is_an_array_with_one_record_per_line():
    data = dumps_records([{"a": 1}, {"b": float("nan")}])
    assert data.splitlines()[1:3] == [b'{"a":1},', b'{"b":null}']
    assert orjson.loads(data) == [{"a": 1}, {"b": None}]


WRITER = r"""
import sys, orjson
from openrlhf_ext.trajectory.files import atomic_write_bytes
path = sys.argv[1]
big = orjson.dumps({"version": "big", "payload": "x" * 60_000_000})
small = orjson.dumps({"version": "small", "payload": "y"})
print("ready", flush=True)
i = 0
while True:
    atomic_write_bytes(path, big if i % 2 == 0 else small)
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "trajectories_step_1.json"
    atomic_write_bytes(target, orjson.dumps({"version": "old", "payload": ""}))
    for delay in (0.05, 0.3, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        content = orjson.loads(target.read_bytes())  # never a torn file
        assert content["version"] in ("old", "big", "small")
        if content["version"] == "big":
            assert len(content["payload"]) == 60_000_000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".trajectories_step_1.json.") for name in leftovers)  # hidden, never read as steps
    assert load_trajectories(target, strict=False) == []  # not a list: skipped, not crashed


def test_manifest_upsert_replaces_a_step_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    upsert_manifest(path, {"global_step": 2, "v": 1})
    upsert_manifest(path, {"global_step": 1, "v": 1})
    with open(path, "ab") as f:
        f.write(b'{"global_step": 3, "v"')  # a torn line from another writer
    upsert_manifest(path, {"global_step": 2, "v": 2})
    assert read_manifest(path) == [{"global_step": 1, "v": 1}, {"global_step": 2, "v": 2}]


def good_record(**over):
    rec = {
        "global_step": 1, "experience_index": 0, "sample_in_exp": 0,
        "generated_tokens": [{"text": "Q", "high_entropy": False}, {"text": "A", "high_entropy": True, "entropy_score": 1.0}],
        "pure_generated_tokens": [{"text": "A", "high_entropy": True, "entropy_score": 1.0}],
        "generated_text": "QA", "pure_generated_text": "A", "advantages": 0.1, "return": 0.2,
        "info": {"reward": 1.0, "response_length": 1},
    }
    rec.update(over)
    return rec


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "file is empty"),
        (b'[{"global_step": 1,', "not valid JSON"),
        (b'{"records": []}', "top level must be a JSON array"),
        (b"[1]", "record 0: record must be an object"),
        (orjson.dumps([good_record(global_step="1")]), "record 0: global_step: must be an integer"),
        (orjson.dumps([good_record(info={"reward": 1.0})]), "record 0: info.response_length: missing"),
        (orjson.dumps([good_record(), good_record(pure_generated_tokens=[{"text": 5, "high_entropy": True}])]),
         "record 1: pure_generated_tokens[0].text: must be a string"),
        (orjson.dumps([good_record(pure_generated_text="B")]), "token texts joined differ from pure_generated_text"),
        (json.dumps([good_record(advantages=float("nan"))]).encode(), "non-standard JSON literal NaN"),
        (b"\x1f\x8b\x08garbage", "gzip data is broken"),  # gzip by its magic bytes, as the viewer tells it
    ],
)
def test_load_trajectories_names_file_record_and_field(tmp_path, content, expected):
    path = tmp_path / "trajectories_step_1.json"
    path.write_bytes(content)
    with pytest.raises(TrajectoryFormatError) as e:
        load_trajectories(path)
    assert expected in str(e.value) and str(path) in str(e.value)


def test_non_strict_loading_keeps_what_is_readable(tmp_path):
    (tmp_path / "trajectories_step_1.json").write_bytes(orjson.dumps([good_record(), {"broken": True}]))
    (tmp_path / "trajectories_step_2.json").write_bytes(b"[truncated")
    assert len(load_trajectories(tmp_path, strict=False)) == 1


def test_gzipped_step_files_and_numeric_step_order(tmp_path):
    import gzip

    (tmp_path / "trajectories_step_10.json.gz").write_bytes(gzip.compress(orjson.dumps([good_record(global_step=10)])))
    (tmp_path / "trajectories_step_9.json").write_bytes(orjson.dumps([good_record(global_step=9)]))
    assert [r["global_step"] for r in load_trajectories(tmp_path)] == [9, 10]
    (tmp_path / "trajectories_step_11.json.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(TrajectoryFormatError, match="decompress"):
        load_trajectories(tmp_path)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trajectories_step"):
        load_trajectories(tmp_path)


def test_atomic_writes_keep_ordinary_permissions(tmp_path):
    """mkstemp's private 0600 must not leak into run files that colleagues read."""
    import os

    target = tmp_path / "summary.json"
    atomic_write_bytes(target, b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"{}")
    assert target.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode


UMASK_CHECK = r"""
import os, sys
os.umask(0o027)
from openrlhf_ext.trajectory.files import atomic_write_bytes
atomic_write_bytes(sys.argv[1], b"{}")
print(oct(os.stat(sys.argv[1]).st_mode & 0o777), oct(os.umask(0o027)))
"""


def test_a_new_file_gets_the_process_umask_which_stays_as_it_was(tmp_path):
    """A run started under umask 027 (group-readable, private to others) writes its files so."""
    res = subprocess.run([sys.executable, "-c", UMASK_CHECK, str(tmp_path / "summary.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0o640", "0o27"]
