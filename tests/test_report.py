"""`openrlhf-traj report`: one HTML file holding the real viewer and the chosen steps' data.

The browser tests open the report from disk in Debian's chromium (Playwright for Python) with the
real viewer file, and check that hostile token texts are shown as text and that no script of
theirs runs. They skip, saying why, only when chromium or the viewer file is absent.
"""
import base64
import gzip
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_ext.trajectory.tools import report as report_mod
from openrlhf_ext.trajectory.tools.cli import main as cli_main
from openrlhf_ext.trajectory.tools.report import (
    LargeReportWarning,
    ReportError,
    build_report,
    find_viewer_html,
    script_safe_json,
    write_report,
)
from openrlhf_ext.trajectory.tools.steps import parse_steps

# The other tool's file: in the repository's tests/fixtures/ once copied there, else in the shared
# folder next to the checkout.
FIXTURE_NAME = "other_tool_trajectories_step_20.json"
FIXTURE_PLACES = [Path(__file__).resolve().parent / "fixtures" / FIXTURE_NAME,
                  Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / FIXTURE_NAME]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Texts that would end the data block, open a comment, or run code if they reached the page as HTML.
HOSTILE = [
    "</script><script>window.__pwned = 1</script>",
    "<!--",
    '<img src=x onerror="window.__pwned = 2">',
    "</SCRIPT ><svg onload=window.__pwned=3>",
    "\u2028\u2029",
    "&lt;&amp;",
    "<\\/script>",
    "]]>-->",
]
# Stand-in page for the tests of the report's own logic (selection, escaping) that need no browser;
# every browser test uses the real viewer.
STAND_IN = "<!doctype html><html><head><title>v</title></head><body><p>viewer</p><script>var x = '</body>';</script></body></html>"


def _token(text, high=False, entropy=None, prompt=False):
    token = {"text": text, "high_entropy": high, "entropy_score": entropy}
    if prompt:
        token["prompt"] = True
    return token


def make_record(step, index, response_texts, prompt_texts=("Question: ", "2+2?")):
    prompt = [_token(t, prompt=True) for t in prompt_texts]
    response = [_token(t, high=(i % 3 == 0), entropy=0.5 + i) for i, t in enumerate(response_texts)]
    return {
        "global_step": step,
        "experience_index": 0,
        "sample_in_exp": index,
        "generated_tokens": prompt + response,
        "pure_generated_tokens": response,
        "generated_text": "".join(prompt_texts) + "".join(response_texts),
        "pure_generated_text": "".join(response_texts),
        "advantages": 0.25,
        "return": 1.0,
        "info": {"reward": 1.0, "response_length": len(response)},
        "prompt_text": "".join(prompt_texts),
    }


def write_run(folder: Path, steps, per_step=3, texts=(" four", ".")):
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        records = [make_record(step, i, list(texts)) for i in range(per_step)]
        (folder / f"trajectories_step_{step}.json").write_text(json.dumps(records), encoding="utf-8")
    return folder


def embedded_payload(html: str) -> dict:
    """The hook's JSON, cut out the way an HTML parser would: up to the first "</script"."""
    start = html.index('<script type="application/json" id="embedded-trajectories">')
    body = html[start:].split(">", 1)[1]
    block = body[: body.lower().index("</script")]
    return json.loads(block), block


def embedded_records(entry: dict):
    if entry["encoding"] == "gzip-base64":
        return json.loads(gzip.decompress(base64.b64decode(entry["data"])))
    return entry["data"]


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "stand_in_viewer.html"
    path.write_text(STAND_IN, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- pure logic

def test_docstring_examples():
    import doctest

    assert doctest.testmod(report_mod, optionflags=doctest.ELLIPSIS).failed == 0


def test_parse_steps_ranges_and_errors():
    assert parse_steps("1,5,10-12") == {1, 5, 10, 11, 12}
    assert parse_steps(" 3 , 7-7 ") == {3, 7}
    assert parse_steps(None) is None and parse_steps("") is None
    for bad in ("a", "5-3", "1,,2", "-4"):
        with pytest.raises(ValueError, match="step"):
            parse_steps(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/&!-\\\"' \u2028\u2029\nscriptSCRIPT\x00é😀")), max_size=40))
def test_script_safe_json_round_trips_and_has_no_markup(text):
    out = script_safe_json({"text": text, "list": [text]})
    assert not re.search("[<>&\u2028\u2029]", out)  # nothing the HTML parser could act on
    assert json.loads(out) == {"text": text, "list": [text]}


def test_data_block_holds_records_and_cannot_be_closed(tmp_path, stand_in):
    run = write_run(tmp_path / "run", [3], texts=HOSTILE)
    html, info = build_report([run], viewer=stand_in, title="</script><!--t")
    payload, block = embedded_payload(html)
    assert "<" not in block
    assert payload["title"] == "</script><!--t"
    [entry] = payload["files"]
    assert entry["name"] == "trajectories_step_3.json" and entry["encoding"] == "json"
    assert [t["text"] for t in entry["data"][0]["pure_generated_tokens"]] == HOSTILE
    # The hook sits before the viewer's script (which reads it when it runs), and the viewer is
    # there verbatim.
    assert html.index("embedded-trajectories") < html.index("<script>var x")
    assert html.replace(html[html.index('<script type="application/json"'): html.index("</head>")], "") == STAND_IN


def test_steps_and_max_trajectories_select_what_is_embedded(tmp_path, stand_in):
    run = write_run(tmp_path / "run", [1, 2, 4, 5, 10], per_step=4)
    html, info = build_report([run], steps="2,4-5", max_trajectories_per_step=2, viewer=stand_in)
    payload, _ = embedded_payload(html)
    names = [f["name"] for f in payload["files"]]
    assert names == ["trajectories_step_2.json", "trajectories_step_4.json", "trajectories_step_5.json"]
    assert all(len(f["data"]) == 2 for f in payload["files"])
    assert info["num_records"] == 6
    with pytest.raises(ReportError, match="no trajectory files matched"):
        build_report([run], steps="7", viewer=stand_in)


def test_gzip_embeds_the_same_records_smaller(tmp_path, stand_in):
    run = write_run(tmp_path / "run", [1, 2], per_step=20, texts=[" the", " answer", " is", " 4"] * 30)
    plain, _ = build_report([run], viewer=stand_in)
    packed, _ = build_report([run], viewer=stand_in, gzip_data=True)
    plain_files = embedded_payload(plain)[0]["files"]
    packed_files = embedded_payload(packed)[0]["files"]
    assert all(f["encoding"] == "gzip-base64" for f in packed_files)
    assert [embedded_records(f) for f in packed_files] == [f["data"] for f in plain_files]
    assert len(packed) < len(plain) - (len(plain) - len(STAND_IN)) // 2


def test_run_folder_manifest_and_summary_are_embedded(tmp_path, stand_in):
    run = write_run(tmp_path / "run", [1])
    (run / "manifest.jsonl").write_text('{"global_step": 1, "file": "trajectories_step_1.json"}\n')
    (run / "summary.json").write_text('{"format_version": 1}')
    payload, _ = embedded_payload(build_report([run], viewer=stand_in)[0])
    by_name = {f["name"]: f for f in payload["files"]}
    assert by_name["manifest.jsonl"]["data"].startswith('{"global_step": 1')
    assert json.loads(by_name["summary.json"]["data"]) == {"format_version": 1}
    payload, _ = embedded_payload(build_report([run], viewer=stand_in, include_run_files=False)[0])
    assert [f["name"] for f in payload["files"]] == ["trajectories_step_1.json"]


def test_same_file_names_from_two_runs_stay_apart(tmp_path, stand_in):
    a = write_run(tmp_path / "a", [1])
    b = write_run(tmp_path / "b", [1])
    payload, _ = embedded_payload(build_report([a, b], viewer=stand_in)[0])
    assert sorted(f["name"] for f in payload["files"]) == ["a/trajectories_step_1.json", "b/trajectories_step_1.json"]


def test_broken_trajectory_file_is_named_and_left_out(tmp_path, stand_in):
    """As in the viewer: a file it cannot open is named and left out, the others go in."""
    run = write_run(tmp_path / "run", [1])
    (run / "trajectories_step_2.json").write_text('[{"global_step": 2, "generated_tokens": [')
    html, info = build_report([run], viewer=stand_in)
    [error] = info["errors"]
    assert error.file.endswith("trajectories_step_2.json") and "not valid JSON" in error.message
    assert [f["name"] for f in embedded_payload(html)[0]["files"]] == ["trajectories_step_1.json"]
    with pytest.raises(Exception, match="trajectories_step_2.json"):
        build_report([run], viewer=stand_in, strict=True)


def test_missing_viewer_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(report_mod, "_repo_viewer_path", lambda: tmp_path / "nowhere" / "render_trajectories.html")
    monkeypatch.setattr(report_mod, "VIEWER_FILE_NAME", "no_such_viewer.html")
    with pytest.raises(ReportError, match="nowhere.*--viewer"):
        find_viewer_html()
    with pytest.raises(ReportError, match="does not exist"):
        find_viewer_html(tmp_path / "missing.html")


def _cli(argv):
    # The real console script's entry point (openrlhf-traj), with its subcommand registration.
    return cli_main(argv)


def test_cli_writes_atomically_and_warns_when_large(tmp_path, stand_in, capsys, monkeypatch):
    run = write_run(tmp_path / "run", [1, 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(report_mod, "LARGE_REPORT_BYTES", 1000)
    assert _cli(["report", str(run), "-o", str(out_dir / "r.html"), "--viewer", str(stand_in)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["r.html"]  # no temporary file left
    err = capsys.readouterr().err
    assert "warning" in err and "--gzip" in err and "--max_trajectories_per_step" in err and "--steps" in err
    with pytest.warns(LargeReportWarning, match="--steps"):
        write_report([run], out_dir / "g.html", warn_bytes=100, viewer=stand_in, gzip_data=True)
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report([run], out_dir / "small.html", viewer=stand_in)  # under the default 20 MB: silent
    assert _cli(["report", str(run), "-o", str(out_dir / "x.html"), "--steps", "9-1", "--viewer", str(stand_in)]) == 2
    assert "bad step range" in capsys.readouterr().err


# ----------------------------------------------------------------------------- in a real browser

def _skip_or_fail(reason: str):
    # CI sets OPENRLHF_EXT_REQUIRE_BROWSER=1: there a missing browser or viewer is a failure.
    if os.environ.get("OPENRLHF_EXT_REQUIRE_BROWSER"):
        pytest.fail(reason + " (OPENRLHF_EXT_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def real_viewer():
    try:
        find_viewer_html()
    except ReportError as error:
        _skip_or_fail(f"the real viewer file is absent (viewer/render_trajectories.html): {error}")


@pytest.fixture(scope="module")
def browser(real_viewer):
    exe = shutil.which("chromium")
    if not exe:
        _skip_or_fail("Debian's chromium is not on PATH (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_report(browser, path: Path):
    """Open a report from disk; returns (page, events) once the viewer has loaded its data."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    events = {"errors": [], "dialogs": [], "requests": []}
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.goto(path.as_uri())
    # Polled from here: wait_for_function would eval() a string, which the viewer's CSP forbids.
    for _ in range(400):
        if page.evaluate("() => !!(window.__viewer && window.__viewer.timings.loadEnd > 0)"):
            break
        page.wait_for_timeout(25)
    else:
        raise TimeoutError(f"the viewer in {path} did not finish loading its embedded data")
    page.wait_for_timeout(200)  # let anything a hostile text might have scheduled run
    return page, events


@pytest.mark.parametrize("gzip_data", [False, True], ids=["json", "gzip"])
def test_hostile_texts_are_shown_as_text_and_run_nothing(tmp_path, browser, gzip_data):
    run = write_run(tmp_path / "run", [3], per_step=2, texts=HOSTILE)
    out = tmp_path / "report.html"
    write_report([run], out, gzip_data=gzip_data, title="<b>title</b></script>")
    page, events = open_report(browser, out)
    try:
        assert page.evaluate("window.__pwned") is None
        assert events["dialogs"] == [] and events["errors"] == []
        assert all(url.startswith("file://") for url in events["requests"]), events["requests"]
        assert page.evaluate("window.__viewer.state.problems") == []
        assert page.title() == "<b>title</b></script>"
        # Every hostile text is on the page as characters, none became an element.
        pane = page.inner_text("section.pane")
        for text in HOSTILE:
            if text.strip():
                assert text in pane, text
        assert page.evaluate("document.querySelectorAll('[onerror], [onload], img[src=x]').length") == 0
        scripts = page.evaluate("[...document.scripts].map(s => s.id || s.type || 'viewer')")
        assert scripts == ["embedded-trajectories", "viewer"]
        loaded = page.evaluate("[...window.__viewer.state.files.keys()]")
        assert loaded == ["trajectories_step_3.json"]
    finally:
        page.context.close()


def test_other_tools_file_opens_in_a_report(tmp_path, browser):
    fixture = next((p for p in FIXTURE_PLACES if p.is_file()), None)
    if fixture is None:
        pytest.skip(f"fixture absent: looked at {', '.join(map(str, FIXTURE_PLACES))}")
    out = tmp_path / "report.html"
    write_report([fixture], out, gzip_data=True)
    page, events = open_report(browser, out)
    try:
        assert events["errors"] == [] and page.evaluate("window.__viewer.state.problems") == []
        records = json.loads(fixture.read_text(encoding="utf-8"))
        assert "step 20" in page.inner_text("body")
        assert records[0]["pure_generated_text"].split("\n")[0] in page.inner_text("section.pane").replace("\n", "")
    finally:
        page.context.close()


def test_converted_rollouts_open_cleanly_in_a_report(tmp_path, browser):
    """convert -> report: the converted files, manifest and summary load with no problem."""
    from openrlhf_ext.trajectory.tools.convert import convert

    src = tmp_path / "rollouts"
    src.mkdir()
    rows = [{"input": f"Q{i}: 2+2? ", "output": f"It is 4. </script><!-- {i}", "score": i % 2, "step": s}
            for s in (1, 2) for i in range(3)]
    for s in (1, 2):
        (src / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] == s))
    convert(src, tmp_path / "run")
    out = tmp_path / "report.html"
    info = write_report([tmp_path / "run"], out, gzip_data=True)
    assert info["files"] == ["trajectories_step_1.json", "trajectories_step_2.json", "manifest.jsonl", "summary.json"]
    page, events = open_report(browser, out)
    try:
        assert events["errors"] == [] and page.evaluate("window.__viewer.state.problems") == []
        assert page.evaluate("window.__viewer.state.stepOrder") == [1, 2]
        assert page.evaluate("window.__viewer.state.manifest.size") == 2
        assert "It is 4. </script><!-- 0" in page.inner_text("section.pane")
    finally:
        page.context.close()
