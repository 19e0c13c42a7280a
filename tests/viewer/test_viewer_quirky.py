"""The viewer over the table of quirky step files that `report` and `convert` run over too
(tests/quirky_inputs.py, tests/test_quirky_inputs.py): it opens, notes and refuses the same files."""
from __future__ import annotations

import pytest

from tests.quirky_inputs import ROWS, VIEWER_PENDING


def _params():
    for name, file_name, content, expected in ROWS:
        marks = [pytest.mark.xfail(reason=VIEWER_PENDING[name], strict=False)] if name in VIEWER_PENDING else []
        yield pytest.param(file_name, content, expected, id=name, marks=marks)


@pytest.mark.parametrize("file_name, content, expected", _params())
def test_the_viewer_agrees_with_the_table(viewer, tmp_path, file_name, content, expected):
    path = tmp_path / file_name
    path.write_bytes(content)
    viewer.load(path)
    problems = viewer.eval_on_selector_all("#problems li", "els => els.map(e => [e.className, e.textContent])")
    loaded = viewer.evaluate("name => window.__viewer.state.files.has(name)", file_name)
    kind, fragment = expected
    errors = [text for cls, text in problems if "error" in cls]
    notices = [text for cls, text in problems if "notice" in cls]
    if kind == "refused":
        assert not loaded and errors, problems
        assert fragment is None or any(fragment in text for text in errors), problems
        return
    assert loaded and errors == [], problems
    if kind == "opens":
        assert notices == [], problems
    else:
        assert any(fragment in text for text in notices), problems
