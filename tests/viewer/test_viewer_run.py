"""A whole run in the viewer: step files read only when opened (a bounded number kept), one
prompt followed across steps (probe files and prompt ids), a folder followed while it trains,
and a report that carries all of it."""
import json
from urllib.parse import quote

from .conftest import VIEWER
from .records import make_record, manifest_line, mark_step, math_step, probe_step, with_v2, write_json, write_run

PROBES = {"probe-a": "What is 6*7?", "probe-b": "Name a prime."}


def steps_list(page):
    return page.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)")


def parsed(page):
    return page.evaluate("() => [...window.__viewer.state.files.keys()].map(n => n.split('/').pop()).sort()")


def test_with_a_manifest_step_files_are_read_when_opened_and_at_most_four_stay_parsed(viewer, tmp_path):
    run = write_run(tmp_path / "trajectories", {k: math_step(k) for k in range(1, 8)})
    viewer.load(run, selector="#dir-input")
    assert parsed(viewer) == ["trajectories_step_1.json"]            # only the step on screen
    assert steps_list(viewer) == ["step 16 traj"] + [f"step {k}6 traj" for k in range(2, 8)]   # counts from the manifest
    assert "at most 4 kept" in viewer.inner_text("#status")
    assert viewer.eval_on_selector("#charts svg >> nth=3", "s => s.querySelectorAll('circle').length") == 7
    for k in range(2, 8):
        viewer.keyboard.press("n")
        viewer.wait_loaded()
        assert f"step {k} · trajectory #0" in viewer.inner_text(".pane .title")
        names = parsed(viewer)
        assert len(names) == min(k, 4) and f"trajectories_step_{k}.json" in names
    assert parsed(viewer) == [f"trajectories_step_{k}.json" for k in range(4, 8)]
    # The dropped steps keep their place in the list and the charts, and read again when opened.
    assert viewer.eval_on_selector("#charts svg >> nth=3", "s => s.querySelectorAll('circle').length") == 7
    viewer.click("#steps li[data-step='1']")
    viewer.wait_loaded()
    recs = math_step(1)
    assert viewer.eval_on_selector(".pane .resp-block", "e => e.textContent") == recs[0]["pure_generated_text"]
    assert len(parsed(viewer)) == 4 and "trajectories_step_1.json" in parsed(viewer)
    assert viewer.evaluate("location.hash") == "#step=1&traj=0"


def test_a_link_to_a_step_not_yet_read_opens_it(viewer, tmp_path):
    run = write_run(tmp_path / "trajectories", {k: math_step(k) for k in (3, 9)})
    viewer.evaluate("location.hash = '#step=9&traj=2'")
    viewer.load(run, selector="#dir-input")
    assert "step 9 · trajectory #2" in viewer.inner_text(".pane .title")
    assert parsed(viewer) == ["trajectories_step_9.json"]


def test_a_step_left_while_it_is_read_stops_reading(viewer, tmp_path):
    big = [make_record(2, i, ["Q"], [(f" w{j}", (j % 50) / 20, -0.1) for j in range(3000)]) for i in range(40)]
    mark_step(big)
    run = write_run(tmp_path / "trajectories", {1: math_step(1), 2: big, 3: math_step(3)})
    assert (run / "trajectories_step_2.json").stat().st_size > 15_000_000     # read a slice at a time
    viewer.load(run, selector="#dir-input")
    viewer.keyboard.press("n")                             # step 2's read starts...
    viewer.keyboard.press("n")                             # ...and step 3 is wanted instead
    viewer.wait_loaded()
    assert "step 3 · trajectory #0" in viewer.inner_text(".pane .title")
    # Long enough for step 2's whole read (about 1 s here) had it gone on in the background.
    viewer.wait_for_timeout(5000)
    assert parsed(viewer) == ["trajectories_step_1.json", "trajectories_step_3.json"]   # nothing of step 2 stays
    assert viewer.eval_on_selector_all("#problems li", "els => els.map(e => e.textContent)") == []
    viewer.keyboard.press("p")                             # and it reads whole when it is wanted
    viewer.wait_loaded(timeout_s=60)
    assert viewer.inner_text("#list-count") == "40 of 40"


def probe_run(tmp_path, probe_steps=(1, 3, 5), extra_probe=None):
    steps = {k: math_step(k) for k in probe_steps}
    probes = {k: probe_step(k, PROBES) for k in probe_steps}
    run = write_run(tmp_path / "trajectories", steps, probes)
    if extra_probe is not None:
        write_json(run / f"probes_step_{extra_probe}.json", probe_step(extra_probe, PROBES))
    return run, probes


def cards(page, step):
    cards = page.eval_on_selector_all(f".px-step[data-step='{step}'] .card", "cs => cs.map(c => [c.querySelector('.title').textContent, c.querySelector('.card-body').textContent])")
    return [tuple(c) for c in cards]


def test_the_prompt_view_shows_one_probe_prompt_over_several_steps(viewer, tmp_path):
    run, probes = probe_run(tmp_path)
    viewer.load(run, selector="#dir-input")
    assert viewer.evaluate("window.__viewer.state.probeFiles.size") == 3
    assert viewer.evaluate("[...window.__viewer.state.probeFiles.values()].every(p => p.trajs === null)")   # not read yet
    viewer.click("[data-page=prompt]")
    viewer.locator(".px-step .card").first.wait_for()
    options = viewer.eval_on_selector_all("#px-pick option", "os => os.map(o => [o.value, o.textContent])")
    assert [v for v, _ in options] == ["probe-a", "probe-b"]
    assert options[0][1] == "probe · What is 6*7? · 3 step(s)"
    assert viewer.eval_on_selector_all(".px-step", "ss => ss.map(s => s.dataset.step)") == ["1", "3", "5"]
    for k in (1, 3, 5):
        want = [r for r in probes[k] if r["prompt_id"] == "probe-a"]
        viewer.locator(f".px-step[data-step='{k}']").scroll_into_view_if_needed()
        viewer.locator(f".px-step[data-step='{k}'] .card").first.wait_for()
        assert cards(viewer, k) == [(f"probe · reward {r['info']['reward']:g}", r["pure_generated_text"]) for r in want]
    # Its fork words, step by step: " Wait" before step 3, " So" after.
    trend = viewer.eval_on_selector_all("#px-head table.trend tbody tr", "rs => rs.map(r => r.cells[0].textContent)")
    assert "·Wait" in trend or "·So" in trend
    assert "What is 6*7?" in viewer.inner_text("#px-prompt")
    assert viewer.locator("#panes").is_hidden() and viewer.locator("#list-wrap").is_hidden()
    # The tooltip works on the view's tokens too.
    viewer.hover(".px-step[data-step='1'] .card .tok >> nth=0")
    assert '" Wait"' in viewer.inner_text("#tooltip")
    # The other probe prompt, and the hash that comes back to it.
    viewer.select_option("#px-pick", "probe-b")
    assert "Name a prime." in viewer.inner_text("#px-prompt")
    assert viewer.evaluate("location.hash") == "#step=1&traj=0&view=prompt&prompt=probe-b"
    viewer.reload()
    viewer.load(run, selector="#dir-input")
    viewer.locator(".px-step .card").first.wait_for()
    assert "Name a prime." in viewer.inner_text("#px-prompt")
    viewer.click("[data-page=step]")
    assert viewer.locator(".pane .tok").count() > 0 and "view=" not in viewer.evaluate("location.hash")


def test_a_prompt_id_seen_at_several_steps_can_be_followed_and_opened(viewer, tmp_path):
    paths = []
    for k in (2, 4, 6):
        recs = math_step(k, n_groups=2, per_group=2)
        for r in recs:
            with_v2(r, prompt_id=f"p{r['group_index']}")
        paths.append(write_json(tmp_path / f"trajectories_step_{k}.json", recs))
    viewer.load(*paths)
    viewer.click("[data-page=prompt]")
    viewer.locator(".px-step .card").first.wait_for()
    assert viewer.eval_on_selector_all("#px-pick option", "os => os.map(o => o.value)") == ["p0", "p1"]
    assert viewer.eval_on_selector_all(".px-step", "ss => ss.map(s => s.dataset.step)") == ["2", "4", "6"]
    assert [t for t, _ in cards(viewer, 2)] == ["trained · reward " + format(r["info"]["reward"], "g") for r in math_step(2, 2, 2)[:2]]
    viewer.locator(".px-step[data-step='4'] .card >> nth=1").scroll_into_view_if_needed()
    viewer.click(".px-step[data-step='4'] .card >> nth=1 >> [data-action=open-resp]")
    assert "step 4 · trajectory #1" in viewer.inner_text(".pane .title")
    assert viewer.locator("#across").is_hidden()


def test_a_probe_file_without_a_manifest_line_is_named_and_shown(viewer, tmp_path):
    run, _ = probe_run(tmp_path, probe_steps=(1, 3), extra_probe=7)
    viewer.load(run, selector="#dir-input")
    viewer.click("[data-page=prompt]")
    viewer.locator(".px-step[data-step='7']").wait_for()
    notes = viewer.eval_on_selector_all("#problems li", "els => els.map(e => e.textContent)")
    assert notes == ["trajectories/probes_step_7.json: probe file of step 7, which has no line in manifest.jsonl: its responses are shown, the step's manifest figures are not"]
    assert viewer.eval_on_selector_all(".px-step", "ss => ss.map(s => s.dataset.step)") == ["1", "3", "7"]
    viewer.click("[data-page=step]")
    assert viewer.locator(".pane .tok").count() > 0


def test_a_probe_file_that_is_not_json_is_named_and_the_rest_opens(viewer, tmp_path):
    run, _ = probe_run(tmp_path, probe_steps=(1, 3))
    (run / "probes_step_3.json").write_text('[{"global_step": 3,')
    viewer.load(run, selector="#dir-input")
    viewer.click("[data-page=prompt]")
    viewer.locator(".px-step .card").first.wait_for()
    errors = viewer.eval_on_selector_all("#problems li.error", "els => els.map(e => e.textContent)")
    assert len(errors) == 1 and errors[0].startswith("trajectories/probes_step_3.json: invalid JSON")
    assert viewer.eval_on_selector_all(".px-step", "ss => ss.map(s => s.dataset.step)") == ["1"]


# ----------------------------------------------------------------------------- live
# Playwright cannot click through Chromium's native folder picker. The test drives the page's own
# path instead: window.showDirectoryPicker is replaced by a function that returns a real
# FileSystemDirectoryHandle of the origin-private file system (OPFS), which the test fills; then
# "Open run folder…" is clicked. Covered: the label's click handler, openFolder with a real
# handle, the listing and reads through handles, the poll, a new step file and manifest line
# appearing without picking again, and opening that step. Not covered: the native dialog and its
# permission prompt, and a folder on disk written by another process (OPFS has the same API).
WRITE_OPFS = """async (files) => {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle('trajectories', { create: true });
    for (const [name, text] of files) {
        const f = await dir.getFileHandle(name, { create: true }), w = await f.createWritable();
        await w.write(text); await w.close();                  // committed on close: atomic, like the saver
    }
}"""
PICKER_IS_OPFS = """() => { window.showDirectoryPicker = async () =>
    (await navigator.storage.getDirectory()).getDirectoryHandle('trajectories'); }"""


def test_a_followed_folder_picks_up_a_step_written_after_it_was_opened(served_viewer):
    page = served_viewer
    s1, s2 = math_step(1), math_step(2)
    page.evaluate(WRITE_OPFS, [["trajectories_step_1.json", json.dumps(s1)], ["manifest.jsonl", json.dumps(manifest_line(1, s1)) + "\n"],
                               ["summary.json", json.dumps({"format_version": 2, "latest_step": 1})]])
    page.evaluate(PICKER_IS_OPFS)
    page.click("label[data-action=open-folder]")
    page.wait_loaded()
    assert steps_list(page) == ["step 16 traj"]
    assert page.inner_text("#live").startswith("● following trajectories while it trains")
    # The run trains on: step 2's file, then its manifest line.
    page.evaluate(WRITE_OPFS, [["trajectories_step_2.json", json.dumps(s2)],
                               ["manifest.jsonl", json.dumps(manifest_line(1, s1)) + "\n" + json.dumps(manifest_line(2, s2)) + "\n"]])
    for _ in range(100):                                   # polled every 3 s; 10 s at most
        if len(steps_list(page)) == 2:
            break
        page.wait_for_timeout(100)
    assert steps_list(page) == ["step 16 traj", "step 26 traj"]
    assert "step 1 · trajectory #0" in page.inner_text(".pane .title")   # the open step stays
    assert "1 new step file(s)" in page.inner_text("#live")
    assert page.eval_on_selector("#charts svg >> nth=3", "s => s.querySelectorAll('circle').length") == 2
    page.keyboard.press("n")
    page.wait_loaded()
    assert page.eval_on_selector(".pane .resp-block", "e => e.textContent") == s2[0]["pure_generated_text"]


def test_picked_files_say_to_reopen_to_refresh(viewer, tmp_path):
    run = write_run(tmp_path / "trajectories", {1: math_step(1)})
    viewer.load(run, selector="#dir-input")
    assert "re-open to refresh" in viewer.inner_text("#live")


# ----------------------------------------------------------------------------- report
def test_a_report_carries_alternatives_mismatch_and_probes(page, tmp_path):
    from openrlhf_ext.trajectory.tools.report import write_report
    steps = {}
    for k in (1, 3):
        recs = [make_record(k, i, ["Q"], [(" a", 2.0, -0.9), (" b", 0.3, -0.1), (" c", 0.1, -0.05)], reward=float(i)) for i in range(2)]
        for r in recs:
            with_v2(r, prompt_id="q", rollout=lambda i, t: t["logprob"] + 0.02 * (i + 1),
                    alternatives={0: [(2001, " b", -0.6), (2000, " a", -0.9), (5, "</script>", -3.0)]})
        mark_step(recs, 0.34)
        steps[k] = recs
    run = write_run(tmp_path / "trajectories", steps, {k: probe_step(k, PROBES) for k in (1, 3)})
    out = tmp_path / "report.html"
    info = write_report([run], out)
    assert "probes_step_1.json" in info["files"] and "probes_step_3.json" in info["files"]
    page.goto(out.as_uri())
    page.locator(".pane .tok").first.wait_for()
    page.hover(".pane .resp-block .tok >> nth=0")
    assert [r.split("\t")[0] for r in page.eval_on_selector_all("#tooltip .tip-alts tr", "rs => rs.map(r => r.cells[0].textContent)")] == ["·b", "·a", "</script>"]
    page.click("[data-mode=mismatch]")
    assert page.is_visible("#legend") and page.locator(".pane .resp-block .tok[style]").count() == 3
    page.click("[data-page=prompt]")
    page.locator(".px-step .card").first.wait_for()
    assert page.eval_on_selector_all("#px-pick option", "os => os.map(o => o.value)") == ["probe-a", "probe-b", "q"]
    assert page.eval_on_selector_all(".px-step", "ss => ss.map(s => s.dataset.step)") == ["1", "3"]
    assert "A report" in page.inner_text("#live")
    assert page.errors == []


def test_a_filter_or_mode_change_recolours_the_prompt_views_cards(viewer, tmp_path):
    run, _ = probe_run(tmp_path)
    viewer.load(run, selector="#dir-input")
    viewer.click("[data-page=prompt]")
    viewer.locator(".px-step .card .tok").first.wait_for()
    toks = ".px-step .card .tok"
    count = lambda js: viewer.eval_on_selector_all(toks, f"ts => ts.filter(t => {js}).length")
    n = viewer.locator(toks).count()
    viewer.evaluate("() => { document.querySelector('.px-step .card').__kept = true; }")
    assert count("t.classList.contains('dim')") == 0
    viewer.fill("#emin", "1000")                           # above every entropy: every token dimmed
    assert count("t.classList.contains('dim')") == n
    viewer.fill("#emin", "")
    assert count("t.classList.contains('dim')") == 0
    assert 0 < count("t.hasAttribute('style')") < n         # marks: only the marked tokens
    viewer.click("[data-mode=heatmap]")
    assert count("t.hasAttribute('style')") == n            # every token has an entropy
    # Recoloured, not rebuilt.
    assert viewer.evaluate("() => document.querySelector('.px-step .card').__kept === true")


def test_a_step_file_that_fails_after_its_first_record_was_shown_leaves_no_figures(viewer, tmp_path):
    big = [make_record(4, i, ["Q"], [(f" w{j}", (j % 50) / 20, -0.1) for j in range(3000)]) for i in range(16)]
    mark_step(big)
    run = write_run(tmp_path / "trajectories", {1: math_step(1), 4: big})
    path = run / "trajectories_step_4.json"
    path.write_text(path.read_text()[:-200])               # cut off in its last record
    assert path.stat().st_size > 4_000_000                 # read progressively: its first record is shown at once
    viewer.load(run, selector="#dir-input")
    share = "#charts svg >> nth=2"                         # the high-entropy share: from the files only
    assert viewer.eval_on_selector(share, "s => s.querySelectorAll('circle').length") == 1
    viewer.keyboard.press("n")
    viewer.wait_loaded(timeout_s=60)
    assert "looks truncated" in viewer.inner_text("#problems")
    assert viewer.evaluate("window.__viewer.state.seen.has(4)") is False
    assert viewer.eval_on_selector(share, "s => s.querySelectorAll('circle').length") == 1
