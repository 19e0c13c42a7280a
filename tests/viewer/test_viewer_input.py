"""Loading: run folders, gzip, the embedded-data hook, files from other tools, and every kind of
bad or hostile file (each gets a message naming it; the rest stays usable)."""
import base64
import gzip
import json

import pytest

from .conftest import SHARED, VIEWER
from .records import make_record, mark_step, math_step, write_json


def problems(page):
    return page.eval_on_selector_all("#problems li", "els => els.map(e => [e.className, e.textContent])")


def test_bad_files_each_get_a_clear_message_and_the_good_one_stays_usable(viewer, tmp_path):
    good = write_json(tmp_path / "trajectories_step_1.json", math_step(1))
    bad_json = tmp_path / "trajectories_step_2.json"
    bad_json.write_text('[{"global_step": 2, "generated_tokens": [}]')
    truncated = tmp_path / "trajectories_step_3.json.gz"
    truncated.write_bytes(gzip.compress(json.dumps(math_step(3)).encode())[:300])
    cut_json = tmp_path / "trajectories_step_4.json"
    cut_json.write_text(json.dumps(math_step(4))[:500])
    empty = tmp_path / "trajectories_step_5.json"
    empty.write_text("")
    not_array = write_json(tmp_path / "trajectories_step_6.json", {"records": []})
    no_tokens = write_json(tmp_path / "trajectories_step_7.json", [{"global_step": 7, "info": {}}, 3])
    fake_gz = tmp_path / "trajectories_step_8.json.gz"
    fake_gz.write_text("[]")
    viewer.load(good, bad_json, truncated, cut_json, empty, not_array, no_tokens, fake_gz)
    msgs = dict((text.split(":")[0], (cls, text)) for cls, text in problems(viewer))
    assert "invalid JSON" in msgs["trajectories_step_2.json"][1]
    assert "gzip data is broken or truncated" in msgs["trajectories_step_3.json.gz"][1]
    assert "looks truncated" in msgs["trajectories_step_4.json"][1]
    assert "is empty" in msgs["trajectories_step_5.json"][1]
    assert "expected a JSON array" in msgs["trajectories_step_6.json"][1] and "object" in msgs["trajectories_step_6.json"][1]
    assert "no usable trajectory record" in msgs["trajectories_step_7.json"][1]
    assert "not gzip" in msgs["trajectories_step_8.json.gz"][1]
    assert all(cls == "error" for cls, _ in msgs.values())
    # The good file is there and works.
    assert viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)") == ["step 16 traj"]
    assert viewer.locator(".pane .tok.hi").count() > 0
    viewer.keyboard.press("j")
    assert "trajectory #1" in viewer.inner_text(".pane .title")


def test_python_nan_and_infinity_literals_are_read_as_null_with_a_notice(viewer, tmp_path):
    recs = [make_record(4, 0, ["P"], [(" a", 1.5), (" b", 0.5), (" c", 0.25)], reward=1.0)]
    mark_step(recs, 0.34)
    recs[0]["pure_generated_tokens"][1]["entropy_score"] = float("nan")
    recs[0]["advantages"] = float("inf")
    recs[0]["info"]["kl"] = float("-inf")
    path = tmp_path / "trajectories_step_4.json"
    path.write_text(json.dumps(recs))                     # Python writes NaN / Infinity / -Infinity
    assert "NaN" in path.read_text() and "-Infinity" in path.read_text()
    viewer.load(path)
    (cls, text), = problems(viewer)
    assert cls == "notice" and "3 NaN/Infinity literal(s) read as null" in text
    viewer.hover(".pane .tok >> nth=1")
    assert "not in file" in viewer.inner_text("#tooltip")
    assert "advantages —" in viewer.inner_text(".pane .meta")


def test_wrong_types_degrade_gracefully(viewer, tmp_path):
    recs = math_step(9, n_groups=1, per_group=2)
    recs[0]["advantages"] = [0.5, 1.5]                    # a list where a number was expected
    recs[0]["info"]["reward"] = "1.0"
    recs[0]["pure_generated_tokens"][0]["text"] = 42
    recs[0]["pure_generated_tokens"][1]["entropy_score"] = "high"
    recs[1]["info"] = ["not", "a", "dict"]
    recs[1]["global_step"] = "9"
    viewer.load(write_json(tmp_path / "trajectories_step_9.json", recs))
    (cls, text), = problems(viewer)
    assert cls == "notice" and text.startswith("trajectories_step_9.json: read with repairs")
    assert "a list where a number was expected" in text and "record 1: info is not an object" in text
    assert viewer.locator("#list .vrow.traj").count() == 2
    assert "advantages 1" in viewer.inner_text(".pane .meta")    # mean of the list
    assert viewer.inner_text(".pane .tok >> nth=0") == "42"


def test_other_tools_file_opens(viewer):
    fixture = SHARED / "fixtures" / "other_tool_trajectories_step_20.json"
    if not fixture.exists():
        pytest.skip(f"shared fixture not found at {fixture}")
    recs = json.loads(fixture.read_text())
    viewer.load(fixture)
    assert problems(viewer) == []
    assert viewer.locator("#list .vrow.traj").count() == len(recs)
    # The response is pure_generated_tokens: the unmarked prompt is not shown as response.
    pure = recs[0]["pure_generated_tokens"]
    assert viewer.eval_on_selector(".pane .resp-block", "e => e.textContent") == "".join(t["text"] for t in pure)
    assert viewer.locator(".pane .tok.hi").count() == sum(t["high_entropy"] for t in pure)
    assert f"entropy known for {sum('entropy_score' in t for t in pure)} of {len(pure)}" in viewer.inner_text(".pane .pane-head")
    viewer.hover(".pane .tok >> nth=0")
    assert "not in file" in viewer.inner_text("#tooltip")
    viewer.hover(".pane .tok.hi >> nth=0")
    assert "1.5214 nats" in viewer.inner_text("#tooltip")
    viewer.check("[data-toggle=prompt]")
    assert viewer.inner_text(".pane .prompt-block") == "Solve: 12*7 =?\n"
    viewer.click("[data-mode=heatmap]")                   # no crash with mostly missing entropies
    assert viewer.locator(".pane .tok[style]").count() == sum('entropy_score' in t for t in pure)


HOSTILE = ['<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>",
           "<b>bold</b>", "=HYPERLINK(\"http://x\")"]


def test_hostile_texts_stay_inert_text(viewer, tmp_path):
    recs = [make_record(1, 0, ["<script>window.__pwned=3</script>"], [(t, 2.0 - i * 0.1) for i, t in enumerate(HOSTILE)],
                        info={"<img src=y onerror=window.__pwned=4>": "<i>v</i>"})]
    recs[0]["label"] = "<svg onload=window.__pwned=5>"
    mark_step(recs, 0.5)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    viewer.check("[data-toggle=prompt]")
    viewer.hover(".pane .resp-block .tok >> nth=0")
    viewer.click("[data-mode=heatmap]")
    viewer.wait_for_timeout(200)
    assert viewer.evaluate("window.__pwned") is None
    assert viewer.locator("#panes img, #panes script, #panes svg, #panes i, #right img, #list img").count() == 0
    texts = viewer.eval_on_selector_all(".pane .resp-block .tok", "els => els.map(e => e.textContent)")
    assert texts == HOSTILE
    head = viewer.inner_text(".pane .pane-head")
    assert "<img src=y onerror=window.__pwned=4>" in head and "<svg onload=window.__pwned=5>" in head
    assert "<script>window.__pwned=3</script>" in viewer.inner_text(".pane .prompt-block")
    viewer.hover(".pane .resp-block .tok >> nth=0")
    assert '<img src=x onerror=\\"window.__pwned=1\\">' in viewer.inner_text("#tooltip")   # shown JSON-quoted


def test_run_folder_with_manifest_summary_and_gzip(viewer, tmp_path):
    run = tmp_path / "trajectories"
    run.mkdir()
    write_json(run / "trajectories_step_10.json", math_step(10))
    write_json(run / "trajectories_step_2.json.gz", math_step(2), gz=True)
    (run / "steps").mkdir()
    (run / "steps" / "step_000002.npz").write_bytes(b"PK\x03\x04 not read by the viewer")
    manifest = [{"global_step": s, "file": f"trajectories_step_{s}.json", "entropy": {"mean": m}, "high_entropy_threshold": 2.0,
                 "reward_mean": r, "hist_edges": [0, 1, 2, 3], "hist_counts": [5, 3, 1]} for s, m, r in [(2, 0.7777, 0.5), (10, 0.6666, 0.75), (12, 0.5, 0.9)]]
    (run / "manifest.jsonl").write_text("\n".join(json.dumps(m) for m in manifest) + "\n")
    write_json(run / "summary.json", {"format_version": 1, "latest_step": 12, "num_steps_written": 3})
    viewer.load(run, selector="#dir-input")
    steps = viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)")
    # With a manifest, a step file is read when its step is opened: step 10 is on disk until then.
    assert steps == ["step 26 traj", "step 10on disk", "step 12not loaded"]
    charts = viewer.inner_text("#charts")
    assert "0.778" in charts and "0.500" in charts           # the manifest's whole-step figures
    assert "latest_step: 12" in viewer.inner_text("#run-info")
    assert "manifest (whole step)" in viewer.inner_text("#hist-note")
    assert viewer.locator("#hist rect").count() == 3
    assert any("ignored" in t for _, t in problems(viewer))   # the npz trace is named as ignored
    viewer.keyboard.press("n")
    assert "0.667" in viewer.inner_text("#charts")
    viewer.locator(".pane .tok").first.wait_for()
    assert "step 10 · trajectory #0" in viewer.inner_text(".pane .title")
    assert viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)")[1] == "step 106 traj"


def test_embedded_data_hook(page, tmp_path):
    step3 = math_step(3)
    step7 = math_step(7)
    payload = {"title": "Run <42> report", "files": [
        {"name": "trajectories_step_3.json", "encoding": "json", "data": step3},
        {"name": "trajectories_step_7.json.gz", "encoding": "gzip-base64",
         "data": base64.b64encode(gzip.compress(json.dumps(step7).encode())).decode()},
        {"name": "manifest.jsonl", "encoding": "json", "data": json.dumps({"global_step": 3, "entropy": {"mean": 0.4242}}) + "\n"},
        {"name": "trajectories_step_9.json.gz", "encoding": "gzip-base64", "data": "not base64!!"},
    ]}
    step3[0]["pure_generated_tokens"][0]["text"] = "</script><b>x</b>"
    text = json.dumps(payload).replace("<", "\\u003c")     # as the report generator writes it
    html = VIEWER.read_text().replace("<script>\n'use strict';",
                                      f'<script type="application/json" id="embedded-trajectories">{text}</script>\n<script>\n\'use strict\';', 1)
    report = tmp_path / "report.html"
    report.write_text(html)
    page.goto(report.as_uri() + "#step=7&traj=2")
    page.wait_for_selector(".pane .tok")
    assert page.title() == "Run <42> report" and page.inner_text("#title") == "Run <42> report"
    assert page.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)") == ["step 36 traj", "step 76 traj"]
    assert "step 7 · trajectory #2" in page.inner_text(".pane .title")
    assert "invalid base64" in page.inner_text("#problems")
    page.keyboard.press("p")
    assert "0.424" in page.inner_text("#charts")           # step 3's mean entropy from the embedded manifest
    assert page.inner_text(".pane .tok >> nth=0") == "</script><b>x</b>"


def test_drag_and_drop(viewer, tmp_path):
    data = json.dumps(math_step(6))
    viewer.evaluate("""(data) => {
        const dt = new DataTransfer();
        dt.items.add(new File([data], 'trajectories_step_6.json', {type: 'application/json'}));
        window.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true}));
        window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", data)
    viewer.wait_for_selector(".pane .tok")
    assert "step 6 · trajectory #0" in viewer.inner_text(".pane .title")


def big_step(step=4, n=24, tokens=2200):
    """A file over the viewer's progressive-reading size (4 M characters), with awkward texts."""
    awkward = ['"', "\\", "]", "}", ",", '\\"', "[{", " \"quoted\"", "\n"]
    recs = []
    for r in range(n):
        resp = [(awkward[i % len(awkward)] if i % 7 == 0 else f" w{i}", (i * 37 % 100) / 33) for i in range(tokens)]
        recs.append(make_record(step, r, ["Q", ":", " [1, 2]"], resp, group_index=r // 4, reward=float(r % 2),
                                info={"nested": [[1, 2], {"a": "]"}]}))
    mark_step(recs)
    recs[3]["pure_generated_tokens"][5]["entropy_score"] = float("nan")
    return recs


def test_big_file_is_read_progressively_and_completely(viewer, tmp_path):
    recs = big_step()
    path = tmp_path / "trajectories_step_4.json"
    path.write_text(json.dumps(recs))                     # with a NaN literal, as Python writes it
    assert path.stat().st_size > 4_000_000
    viewer.load(path)
    assert viewer.inner_text("#list-count") == "24 of 24"
    (cls, text), = problems(viewer)
    assert cls == "notice" and "1 NaN/Infinity literal(s)" in text
    viewer.click("#list .vrow.traj[data-traj='3']")
    texts = viewer.eval_on_selector_all(".pane .resp-block .tok", "els => els.slice(0, 15).map(e => e.textContent)")
    assert texts == [t["text"] for t in recs[3]["pure_generated_tokens"][:15]]
    assert "nested [[1,2],{\"a\":\"]\"}]" in viewer.inner_text(".pane .meta")


def test_big_truncated_file_reports_and_leaves_nothing_half_loaded(viewer, tmp_path):
    good = write_json(tmp_path / "trajectories_step_1.json", math_step(1))
    path = tmp_path / "trajectories_step_4.json"
    path.write_text(json.dumps(big_step())[:4_500_000])
    viewer.load(good, path)
    msgs = dict((t.split(":")[0], (c, t)) for c, t in problems(viewer))
    assert msgs["trajectories_step_4.json"][0] == "error" and "looks truncated" in msgs["trajectories_step_4.json"][1]
    assert viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)") == ["step 16 traj"]
