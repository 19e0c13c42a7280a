"""openrlhf-traj validate / stats, as a user runs them."""
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.test_saver import make_saver, step_experiences

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "openrlhf_ext.trajectory", *map(str, args)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture()
def run_dir(tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "4")
    for step in (1, 2, 10):
        saver.save_step(step, step_experiences(tokenizer, seed=step))
    return tmp_path


def test_validate_accepts_a_run_written_by_the_saver(run_dir):
    for path in (run_dir, run_dir / "trajectories", run_dir / "trajectories" / "trajectories_step_2.json"):
        res = run_cli("validate", path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.startswith("OK:")


@pytest.mark.skipif(not FIXTURES.exists(), reason="../shared/fixtures is not beside this checkout")
def test_validate_accepts_another_tools_file():
    res = run_cli("validate", FIXTURES / "other_tool_trajectories_step_20.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK: 1 file(s), 3 record(s)" in res.stdout
    res = run_cli("stats", FIXTURES)
    assert res.returncode == 0 and "20" in res.stdout.splitlines()[1]


def test_validate_reports_each_problem_and_fails(run_dir):
    folder = run_dir / "trajectories"
    records = orjson.loads((folder / "trajectories_step_2.json").read_bytes())
    records[1]["info"]["reward"] = "high"
    (folder / "trajectories_step_2.json").write_bytes(orjson.dumps(records))
    (folder / "trajectories_step_10.json").unlink()
    res = run_cli("validate", folder)
    assert res.returncode == 1
    assert f"{folder / 'trajectories_step_2.json'}: record 1: info.reward: must be a number" in res.stdout
    assert "lists trajectories_step_10.json, which is missing" in res.stdout
    assert "INVALID" in res.stderr


def test_stats_prints_one_row_per_step_in_numeric_order(run_dir):
    res = run_cli("stats", run_dir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "H mean" in lines[0] and "fork words" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "10"]
    # the whole step's responses come from the manifest, not the 4 saved ones
    assert lines[1].split()[1:3] == ["8", "4"]
    js = orjson.loads(run_cli("stats", run_dir, "--json").stdout)
    assert js[0]["fork_words"] and all(isinstance(c, int) for _, c in js[0]["fork_words"])


def test_console_script_is_installed():
    exe = shutil.which("openrlhf-traj")
    if exe is None:
        pytest.skip("package not installed with pip (pip install -e .)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "validate" in res.stdout and "stats" in res.stdout


def test_missing_path_exits_2(tmp_path):
    res = run_cli("stats", tmp_path / "nope")
    assert res.returncode == 2 and "no such file" in res.stderr
