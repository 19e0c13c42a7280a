"""Hostile and broken input (issue 8, section 3): each case was reproduced on the code before this
test, and is now bounded in memory and time, one line naming the file, never a traceback.

The memory cases run the real command in a process of its own under an address-space limit
(resource.setrlimit), so that a reader that does not bound itself fails here instead of taking
the machine's memory."""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from openrlhf_ext.trajectory import TrajectorySaver, load_trajectories
from openrlhf_ext.trajectory.tools.cli import main
from openrlhf_ext.trajectory.toy import toy_experience, toy_tokenizer
from tests.quirky_inputs import record

REPO = Path(__file__).resolve().parents[1]
GiB = 1 << 30
# Runs argv[2:] as `openrlhf-traj` (or `load` for load_trajectories) under an address-space limit.
BOUNDED = r"""
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
if sys.argv[2] == "load":
    from openrlhf_ext.trajectory import TrajectoryFormatError, load_trajectories
    try:
        load_trajectories(sys.argv[3])
    except TrajectoryFormatError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
from openrlhf_ext.trajectory.tools.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_bounded(argv, memory: int = 2 * GiB, timeout: float = 120) -> subprocess.CompletedProcess:
    """`openrlhf-traj ARGV` in its own process, under `memory` bytes of address space and a timeout."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_ARENA_MAX="2")
    return subprocess.run([sys.executable, "-c", BOUNDED, str(memory), *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env, stdin=subprocess.DEVNULL)


def gzip_bomb(path: Path, expanded: int = 5 * GiB) -> Path:
    """A .json.gz of ~5 MB that inflates to `expanded` bytes of zeros (gzip members in a row)."""
    member = gzip.compress(bytes(64 << 20), compresslevel=9)
    path.write_bytes(member * (expanded // (64 << 20)))
    return path


def _steps_folder(tmp_path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "trajectories_step_1.json").write_text(json.dumps([record(step=1)]))
    return folder


# ----------------------------------------------------------------------------- unbounded memory

@pytest.mark.parametrize("command", ["load", "validate", "stats", "report", "convert"])
def test_a_gzip_bomb_is_stopped_while_it_inflates(tmp_path, command):
    """A 5 MB .json.gz of 5 GB of zeros took validate / stats / report to 10.7 GB."""
    folder = _steps_folder(tmp_path)
    gzip_bomb(folder / "trajectories_step_2.json.gz")
    argv = {"load": ["load", folder], "validate": ["validate", folder], "stats": ["stats", folder],
            "report": ["report", folder, "-o", tmp_path / "r.html"], "convert": ["convert", folder, "-o", tmp_path / "out"]}
    res = run_bounded(argv[command])
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == 1, res.stderr[-2000:]  # the other file was read: done, with one file refused
    assert "trajectories_step_2.json.gz" in res.stdout + res.stderr
    assert "expands to more than 512 MiB when decompressed" in res.stdout + res.stderr


def _header_only_npz(path: Path, shapes: dict) -> None:
    """An npz whose .npy headers declare `shapes` over a few bytes of data."""
    with zipfile.ZipFile(path, "w") as z:
        for key, (dtype, shape) in shapes.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
            z.writestr(key + ".npy", header.getvalue() + b"\0" * 64)


def test_an_npz_whose_arrays_each_fit_but_not_together_is_refused_before_reading(tmp_path):
    """Each array of shape (1, 1e9) passed the old check (alone, against the whole RAM): 15 GB."""
    (tmp_path / "trace" / "steps").mkdir(parents=True)
    _header_only_npz(tmp_path / "trace" / "steps" / "step_000001.npz", {
        "entropies": ("<f2", (1, 10**9)), "response_mask": ("|b1", (1, 10**9)),
        "responses": ("<i4", (1, 10**9)), "response_index": ("<i4", (1,))})
    tok = tmp_path / "tokenizer.json"
    toy_tokenizer().save(str(tok))
    res = run_bounded(["convert", tmp_path / "trace", "-o", tmp_path / "out", "--tokenizer", tok], memory=3 * GiB)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "step_000001.npz: its arrays declare 6.5 GiB in all, more than the 2.0 GiB a step may hold" in res.stderr


def test_an_out_of_vocabulary_id_is_a_placeholder_and_a_warning(tmp_path, caplog):
    """One id of 10^8 in `sequences` grew save_step by 2.3 GB and saved "" without a word."""
    from openrlhf_ext.trajectory.texts_table import table_for

    tok = toy_tokenizer()
    exp = toy_experience(tok, ["1+1="], ["22"], rewards=[1.0])
    exp.sequences[0, -1] = 10**8  # the response's last token
    saver = TrajectorySaver(tmp_path, tok, num_to_save=1)
    with caplog.at_level("WARNING"):
        assert saver.save_step(1, [exp]) is not None
    [rec] = load_trajectories(tmp_path)  # strict: the record still follows FORMAT.md
    assert [t["text"] for t in rec["pure_generated_tokens"]] == ["2", "<unk:100000000>"]
    assert "token id 100000000 is outside the tokenizer's vocabulary" in caplog.text
    assert len(table_for(tok).piece) < 1000


@pytest.mark.parametrize("command", ["report", "convert"])
def test_a_huge_step_range_is_kept_as_a_range(tmp_path, command):
    """--steps 1-99999999999 built a set of 10^11 steps."""
    folder = _steps_folder(tmp_path)
    out = tmp_path / ("r.html" if command == "report" else "out")
    res = run_bounded([command, folder, "-o", out, "--steps", "1-99999999999"], memory=1 * GiB, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
@pytest.mark.parametrize("command", ["validate", "stats"])
def test_a_manifest_that_is_a_fifo_or_a_device_is_refused(tmp_path, kind, command):
    """A FIFO as manifest.jsonl made validate and stats hang; /dev/zero read until out of memory."""
    folder = _steps_folder(tmp_path)
    if kind == "fifo":
        os.mkfifo(folder / "manifest.jsonl")
    else:
        (folder / "manifest.jsonl").symlink_to("/dev/zero")
    res = run_bounded([command, folder], memory=1 * GiB, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "manifest.jsonl: a " in res.stdout + res.stderr and "not a regular file" in res.stdout + res.stderr


# ----------------------------------------------------------------------------- tracebacks instead of messages

def _cli(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("content, expected", [
    (json.dumps([record(step=2)]).replace('"reward": 1.0', '"reward": 1e999'), "too large for a double"),
    (json.dumps([record(step=2)]).replace('" 4"', '" 4\\ud800"'), "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested more than about 1,000 levels"),
], ids=["1e999", "lone surrogate", "100k nesting"])
def test_a_bad_step_file_is_one_line_and_the_rest_of_the_folder_is_checked(tmp_path, capsys, content, expected):
    """IndexError at schema.py:91 (1e999, \\ud800) and RecursionError (deep JSON) stopped the check."""
    folder = _steps_folder(tmp_path)
    (folder / "trajectories_step_2.json").write_text(content)
    (folder / "trajectories_step_3.json").write_text("[1]")
    code, out = _cli(["validate", folder], capsys)
    assert code == 1
    assert "trajectories_step_2.json: " in out and expected in out
    assert "trajectories_step_3.json: record 0: record must be an object" in out  # the rest is checked


def test_flipped_deflate_bytes_are_named(tmp_path, capsys):
    """zlib.error."""
    folder = _steps_folder(tmp_path)
    packed = bytearray(gzip.compress(json.dumps([record(step=2)] * 50).encode()))
    packed[12] ^= 0xFF  # in the first block's code lengths: zlib.error ("invalid code lengths set")
    (folder / "trajectories_step_2.json.gz").write_bytes(bytes(packed))
    for argv in (["validate", folder], ["stats", folder]):
        code, out = _cli(argv, capsys)
        assert code == 1 and "trajectories_step_2.json.gz: cannot decompress: the gzip data is broken" in out


def test_stats_reads_a_foreign_manifest_line_and_fails_when_every_file_is_unreadable(tmp_path, capsys):
    """{"global_step": [1]} in the manifest: TypeError in stats; all rows errors: exit 0."""
    folder = _steps_folder(tmp_path)
    (folder / "manifest.jsonl").write_text('{"global_step": [1]}\n{"global_step": 1, "num_responses": 9}\n')
    code, out = _cli(["stats", folder], capsys)
    assert code == 0 and "       9" in out
    (folder / "trajectories_step_1.json").write_text("not json")
    code, out = _cli(["stats", folder], capsys)
    assert code == 1 and "1 of 1 file(s) could not be read" in out


def _rollouts(tmp_path, lines) -> Path:
    src = tmp_path / "rollouts"
    src.mkdir(parents=True)
    for step, rows in lines.items():
        (src / f"{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def test_convert_names_a_step_beyond_64_bits_and_writes_a_lone_surrogate_as_u_fffd(tmp_path, capsys):
    """A step of 99999999999999999999, and an output with \\ud800 after earlier steps: TypeErrors."""
    row = {"input": "1+1=", "output": " 2", "score": 1.0, "step": 1}
    src = _rollouts(tmp_path, {1: [row], 2: [dict(row, step=2, output=" 2\ud800")]})
    code, out = _cli(["convert", src, "-o", tmp_path / "out"], capsys)
    assert code == 0 and "2.jsonl:1: 1 string(s) with a lone surrogate escape" in out, out
    assert load_trajectories(tmp_path / "out" / "trajectories_step_2.json")[0]["pure_generated_text"] == " 2\ufffd"
    src = _rollouts(tmp_path / "b", {1: [dict(row, step=99999999999999999999)]})
    code, out = _cli(["convert", src, "-o", tmp_path / "out2"], capsys)
    assert code == 2 and "1.jsonl:1: field 'step' must be an integer from 0 to 9223372036854775807" in out, out


# ----------------------------------------------------------------------------- data loss

def test_report_never_writes_over_an_input_a_folder_or_a_file_it_did_not_write(tmp_path, capsys):
    """report run -o run/trajectories_step_1.json replaced the input with HTML and exited 0;
    report -o DIR raised IsADirectoryError."""
    folder = _steps_folder(tmp_path)
    step_file = folder / "trajectories_step_1.json"
    before = step_file.read_bytes()
    for force in ([], ["--force"]):
        code, out = _cli(["report", folder, "-o", step_file, *force], capsys)
        assert code == 2 and "is one of the report's inputs" in out and step_file.read_bytes() == before
    probe_file = folder / "probes_step_1.json"  # the run's probe files are embedded too: inputs as well
    probe_file.write_text("[]")
    code, out = _cli(["report", folder, "-o", probe_file, "--force"], capsys)
    assert code == 2 and "is one of the report's inputs" in out and probe_file.read_text() == "[]"
    probe_file.unlink()
    code, out = _cli(["report", folder, "-o", tmp_path], capsys)
    assert code == 2 and "is a folder: give the report's file name" in out
    notes = tmp_path / "notes.html"
    notes.write_text("my notes")
    code, out = _cli(["report", folder, "-o", notes], capsys)
    assert code == 2 and "is not a report written by openrlhf-traj report" in out and notes.read_text() == "my notes"
    assert _cli(["report", folder, "-o", notes, "--force"], capsys)[0] == 0
    assert _cli(["report", folder, "-o", notes], capsys)[0] == 0  # ours now: replaced without --force


def test_convert_never_writes_into_the_folder_it_reads(tmp_path, capsys):
    folder = _steps_folder(tmp_path)
    before = (folder / "trajectories_step_1.json").read_bytes()
    code, out = _cli(["convert", folder, "-o", folder, "--overwrite"], capsys)
    assert code == 2 and "is a folder convert reads from" in out
    assert (folder / "trajectories_step_1.json").read_bytes() == before


def test_a_file_name_that_is_not_utf8_is_printed_escaped(tmp_path, capsys):
    """A name such as b"\\xff_trajectories_step_1.json" (os.listdir gives it as a lone surrogate)."""
    folder = tmp_path / "run"
    folder.mkdir()
    name = os.fsencode(folder) + b"/\xff_trajectories_step_1.json"
    with open(name, "wb") as f:
        f.write(json.dumps([record(step=1, advantages=[1, 2])]).encode())
    for argv in (["validate", folder], ["stats", folder], ["stats", folder, "--json"],
                 ["report", folder, "-o", tmp_path / "r.html"], ["convert", folder, "-o", tmp_path / "out"]):
        code, out = _cli(argv, capsys)
        assert code in (0, 1) and "Traceback" not in out, (argv, out)
