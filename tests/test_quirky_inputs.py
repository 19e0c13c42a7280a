"""`report` and `convert` open every file the viewer opens, with the viewer's notices, and refuse
what it refuses: the table of tests/quirky_inputs.py, which the viewer runs over too
(tests/viewer/test_viewer_quirky.py). What convert writes then follows FORMAT.md exactly."""
from __future__ import annotations

import pytest

from openrlhf_ext.trajectory.tools.cli import main
from tests.quirky_inputs import ROWS


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _check(code: int, err: str, expected, command: str) -> None:
    kind, fragment = expected
    assert "Traceback" not in err, err
    if kind == "refused":
        assert code == 2, f"{command}: {err}"
        assert fragment is None or fragment in err, f"{command}: {err}"
        return
    assert code == 0, f"{command}: {err}"
    notices = [line for line in err.splitlines() if ": notice: " in line]
    if kind == "opens":
        assert notices == [], f"{command}: {err}"
    else:
        assert any(fragment in line for line in notices), f"{command}: {err}"


@pytest.mark.parametrize("name, file_name, content, expected", ROWS, ids=[row[0] for row in ROWS])
def test_report_and_convert_agree_with_the_viewer(tmp_path, capsys, name, file_name, content, expected):
    path = tmp_path / "in" / file_name
    path.parent.mkdir()
    path.write_bytes(content)
    _check(*_run(["report", str(path), "-o", str(tmp_path / "report.html")], capsys), expected, "report")
    _check(*_run(["convert", str(path), "-o", str(tmp_path / "out")], capsys), expected, "convert")
    if expected[0] != "refused":  # what convert wrote is FORMAT.md, strictly
        code, err = _run(["validate", str(tmp_path / "out")], capsys)
        assert code == 0, err
    # --strict refuses what breaks the format, and takes the rest as before
    strict = _run(["report", str(path), "-o", str(tmp_path / "strict.html"), "--strict"], capsys)[0]
    assert strict == (0 if _valid(tmp_path, path, capsys) else 2)


def _valid(tmp_path, path, capsys) -> bool:
    return _run(["validate", str(path)], capsys)[0] == 0
