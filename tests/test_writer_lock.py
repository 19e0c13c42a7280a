"""One writer per run folder, and a folder that stays true to its manifest: two savers (real
processes) on one folder, a manifest write that fails after its step file, and a resume on a
folder that cannot be written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from openrlhf_ext.trajectory.files import read_manifest
from openrlhf_ext.trajectory.tools.cli import main as cli_main
from tests.test_saver import make_saver, step_experiences

REPO = Path(__file__).resolve().parents[1]
# A saver in a process of its own, on the toy tokenizer: it saves the first step of argv[2] (which
# takes the folder), says "ready", saves the others, then waits until its stdin closes (so the
# test decides when it ends).
SAVER = r"""
import sys
from openrlhf_ext.trajectory import TrajectorySaver
from openrlhf_ext.trajectory.toy import toy_experience, toy_tokenizer
tok = toy_tokenizer()
saver = TrajectorySaver(sys.argv[1], tok, num_to_save=2)
for i, step in enumerate(map(int, sys.argv[2].split(","))):
    saver.save_step(step, [toy_experience(tok, ["1+1=", "2+2="], ["2", "4"], rewards=[1.0, 0.0], seed=step)])
    if i == 0:
        print("ready", flush=True)
print("saved", flush=True)
sys.stdin.read()
"""


@contextmanager
def saver_process(folder: Path, steps: str):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(folder), steps], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def _validate(folder) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", "openrlhf_ext.trajectory", "validate", str(folder)], cwd=REPO,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    return res.returncode, res.stdout + res.stderr


def test_a_second_saver_on_the_folder_fails_at_start_naming_the_first(tmp_path):
    """Two runs on one folder (disjoint steps) lost manifest lines: now the second stops at once."""
    folder = tmp_path / "trajectories"
    odd = ",".join(str(s) for s in range(1, 40, 2))
    with saver_process(folder, odd) as first:
        second = subprocess.run([sys.executable, "-c", SAVER, str(folder), "2,4,6"], cwd=REPO, capture_output=True,
                                text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120, input="")
        assert second.returncode != 0 and "FolderInUse" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "is being written by another process" in second.stderr
        assert first.stdout.readline().strip() == "saved"
    steps = [e["global_step"] for e in read_manifest(folder / "manifest.jsonl")]
    assert steps == list(range(1, 40, 2)) == sorted(int(p.stem.split("_")[-1]) for p in folder.glob("trajectories_step_*.json"))
    assert _validate(folder)[0] == 0
    assert not (folder / ".writer.lock").exists()  # the first one ended: the lock file went with it


def test_a_second_writer_in_the_same_process_and_convert_fail_too(tmp_path, tokenizer, capsys):
    saver = make_saver(tmp_path, tokenizer)
    saver.save_step(1, step_experiences(tokenizer))  # the first write takes the folder
    other = make_saver(tmp_path, tokenizer)  # --trajectory_strict or not: a configuration error
    with pytest.raises(RuntimeError, match=f"is being written by another process .*pid {os.getpid()}"):  # FolderInUse
        other.save_step(2, step_experiences(tokenizer))
    src = tmp_path / "src"
    src.mkdir()
    (src / "trajectories_step_1.json").write_bytes((tmp_path / "trajectories" / "trajectories_step_1.json").read_bytes())
    assert cli_main(["convert", str(src), "-o", str(tmp_path / "trajectories"), "--overwrite"]) == 2
    assert "is being written by another process (what TrajectorySaver" in capsys.readouterr().err
    saver.close()
    other.save_step(2, step_experiences(tokenizer))
    assert [e["global_step"] for e in read_manifest(tmp_path / "trajectories" / "manifest.jsonl")] == [1, 2]


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture
def immutable():
    """chattr +i: a real write failure even for root (chmod does not stop root); undone after."""
    done = []

    def make(path: Path):
        if not _chattr("+i", path):
            pytest.skip("chattr +i is not available on this filesystem")
        done.append(path)

    yield make
    for path in done:
        _chattr("-i", path)


def test_a_manifest_write_that_fails_is_found_by_validate_and_repaired_by_the_next_step(tmp_path, tokenizer, immutable):
    saver = make_saver(tmp_path, tokenizer)
    out = tmp_path / "trajectories"
    saver.save_step(1, step_experiences(tokenizer))
    immutable(out / "manifest.jsonl")  # step 2's file is written, its manifest line is not (a full disk)
    assert saver.save_step(2, step_experiences(tokenizer, seed=2)) is None
    assert (out / "trajectories_step_2.json").is_file()
    code, text = _validate(out)
    assert code == 1 and "trajectories_step_2.json: has no line in manifest.jsonl" in text, text
    _chattr("-i", out / "manifest.jsonl")
    saver.save_step(3, step_experiences(tokenizer, seed=3))
    entries = read_manifest(out / "manifest.jsonl")
    assert [(e["global_step"], e.get("repaired", False)) for e in entries] == [(1, False), (2, True), (3, False)]
    assert entries[1]["file"] == "trajectories_step_2.json" and entries[1]["file_bytes"] > 0
    assert _validate(out) == (0, _validate(out)[1]) and "OK: 3 file(s)" in _validate(out)[1]


def test_a_manifest_that_is_a_folder_is_reported_and_the_next_step_rebuilds_it(tmp_path, tokenizer):
    """No chattr needed: a folder where manifest.jsonl should be makes its write fail for real."""
    saver = make_saver(tmp_path, tokenizer)
    out = tmp_path / "trajectories"
    (out / "manifest.jsonl").mkdir(parents=True)
    assert saver.save_step(1, step_experiences(tokenizer)) is None
    code, text = _validate(out)
    assert code == 1 and "manifest.jsonl: a folder, not a regular file" in text, text
    (out / "manifest.jsonl").rmdir()
    saver.save_step(2, step_experiences(tokenizer, seed=2))
    assert [(e["global_step"], e.get("repaired", False)) for e in read_manifest(out / "manifest.jsonl")] == [
        (1, True), (2, False)]
    assert _validate(out)[0] == 0


def test_validate_finds_manifest_lines_that_disagree_with_their_files(tmp_path, tokenizer):
    """What two savers writing the same steps leave: a line whose numbers are another file's."""
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "4")
    out = tmp_path / "trajectories"
    saver.save_step(1, step_experiences(tokenizer))
    saver.save_step(2, step_experiences(tokenizer, seed=2))
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    lines[0]["high_entropy_threshold"] += 0.5
    lines[1]["num_saved"] = 3
    (out / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    code, text = _validate(out)
    assert code == 1
    assert "trajectories_step_1.json: its records' high_entropy_threshold" in text and "is not the manifest's" in text
    assert "trajectories_step_2.json: holds 4 record(s), the manifest says num_saved 3" in text


def _resume_args(tmp_path, traj):
    ckpt = tmp_path / "ckpt"
    (ckpt / "_actor").mkdir(parents=True)
    (ckpt / "_actor" / "latest").write_text("global_step1")
    return ["--max_steps", "2", "--rollout_backend", "hf", "--save_path", str(tmp_path / "run"), "--ckpt_path",
            str(ckpt), "--load_checkpoint", "--save_trajectories", "--trajectory_dir", str(traj)]


def test_resume_on_a_folder_that_cannot_be_written_stops_before_ray(tmp_path, tokenizer, immutable):
    pytest.importorskip("ray")
    import ray

    import train_colocate

    traj = tmp_path / "traj"
    saver = make_saver(tmp_path, tokenizer, "--trajectory_dir", str(traj))
    for step in (1, 2):
        saver.save_step(step, step_experiences(tokenizer, seed=step))
    del saver  # gives the folder's writer lock back
    immutable(traj)  # step 2's files must go before step 2 is redone, and cannot
    with pytest.raises(SystemExit) as stop:
        train_colocate.main(_resume_args(tmp_path, traj))
    message = str(stop.value.code)
    assert f"cannot write to {traj}" in message and "resuming from step 1 must remove" in message
    assert "--trajectory_dir" in message
    assert not ray.is_initialized()


def test_resume_guard_says_what_is_wrong_for_any_error_of_the_filesystem(tmp_path, tokenizer):
    """The same guard, for a manifest.jsonl that is a folder: a real OSError, no chattr needed."""
    import train_colocate

    saver = make_saver(tmp_path, tokenizer)
    saver.save_step(2, step_experiences(tokenizer))
    del saver
    (tmp_path / "trajectories" / "manifest.jsonl").unlink()
    (tmp_path / "trajectories" / "manifest.jsonl").mkdir()
    with pytest.raises(SystemExit, match="cannot write to .*trajectories .*resuming from step 1 must remove"):
        train_colocate.open_trajectory_folder(make_saver(tmp_path, tokenizer), 1)
