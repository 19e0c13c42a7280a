"""Format version 2 in the viewer: what the policy could have said (alternatives), where the
rollout engine and the trainer disagree (the mismatch mode), and bad v2 values. Version 1 files
keep opening as before."""
import json
import math

import pytest

from .conftest import SHARED
from .records import make_record, manifest_line, mark_step, math_step, with_v2, write_json, write_run

FIXTURE = SHARED / "fixtures" / "v2_trajectories_step_5.json"


def problems(page):
    return page.eval_on_selector_all("#problems li", "els => els.map(e => [e.className, e.textContent])")


def tip_alts(page):
    """The tooltip's alternatives: [(text, probability, sampled?)]."""
    rows = page.eval_on_selector_all("#tooltip .tip-alts tr", "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent, r.classList.contains('sampled')])")
    return [tuple(r) for r in rows]


def js_sig(v):
    """The viewer's sig(): three significant digits, as JavaScript prints the number."""
    return repr(float(f"{v:.3g}")) if v else "0"


def fixture_records():
    if not FIXTURE.exists():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    return json.loads(FIXTURE.read_text())


def test_the_v2_fixture_shows_its_alternatives_in_the_tooltip(viewer):
    recs = fixture_records()
    viewer.load(FIXTURE)
    assert problems(viewer) == []
    viewer.hover(".pane .resp-block .tok >> nth=2")             # "=15", sampled and the most probable
    alts = recs[0]["pure_generated_tokens"][2]["alternatives"]
    assert tip_alts(viewer) == [(a["text"], f"{100 * math.exp(a['logprob']):.1f}%", a["id"] == 222) for a in alts]
    assert tip_alts(viewer)[4][0] == "<0xE4><0xBD>"             # partial bytes shown as they are written
    viewer.hover(".pane .resp-block .tok >> nth=4")             # " Wait": sampled, second of three
    assert tip_alts(viewer) == [("·So", "41.0%", False), ("·Wait", "30.0%", True), ("·Then", "15.0%", False)]
    assert "alternatives (top 3" in viewer.inner_text("#tooltip")
    # The second answer's "=14" is marked but has no alternatives: the tooltip has none either.
    viewer.click("#list .vrow.traj[data-traj='1']")
    viewer.hover(".pane .resp-block .tok >> nth=2")
    assert '"=14"' in viewer.inner_text("#tooltip") and tip_alts(viewer) == []
    # The top-K table shows the alternatives of its tokens.
    assert viewer.get_attribute("#top-high", "class") == ""
    row = viewer.locator("#top-high tbody tr", has_text="Wait").first
    assert row.locator("td.alts").text_content() == "·So 41.0%  ·Wait 30.0%  ·Then 15.0%"


def test_the_v2_fixture_in_mismatch_mode(viewer):
    recs = fixture_records()
    viewer.load(FIXTURE)
    toks = [t for r in recs for t in r["pure_generated_tokens"]]
    deltas = sorted(abs(t["logprob"] - t["rollout_logprob"]) for t in toks)
    p95, mean = deltas[math.ceil(0.95 * len(deltas)) - 1], sum(deltas) / len(deltas)
    viewer.click("[data-mode=mismatch]")
    assert viewer.get_attribute("[data-mode=mismatch]", "aria-pressed") == "true"
    colours = viewer.eval_on_selector_all(".pane .resp-block .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    resp = recs[0]["pure_generated_tokens"]
    by_delta = dict(zip([t["logprob"] - t["rollout_logprob"] for t in resp], colours))
    assert by_delta[resp[4]["logprob"] - resp[4]["rollout_logprob"]] == "rgb(178, 24, 43)"   # +0.15 = p95: the red end
    assert colours[1] == colours[5] == "rgb(247, 247, 247)"                                  # Δ = 0: the white middle
    assert len(set(colours)) >= 4
    legend = viewer.inner_text("#legend")
    assert "rollout_logprob" in legend and f"+{js_sig(p95)}" in legend and f"-{js_sig(p95)}" in legend
    stats = viewer.inner_text("#step-stats")
    assert "mismatch |Δ| mean / p95 / max" in stats
    assert f"{js_sig(mean)} / {js_sig(p95)} / {js_sig(deltas[-1])}" in stats
    viewer.hover(".pane .resp-block .tok >> nth=4")
    assert "mismatch Δ" in viewer.inner_text("#tooltip") and "+0.15" in viewer.inner_text("#tooltip")
    assert "mode=mismatch" in viewer.evaluate("location.hash")


def test_a_version_1_file_opens_without_the_v2_parts(viewer, tmp_path):
    run = tmp_path / "v1"
    run.mkdir()
    write_json(run / "trajectories_step_1.json", math_step(1))
    write_json(run / "summary.json", {"format_version": 1})
    viewer.load(run, selector="#dir-input")
    assert problems(viewer) == []
    assert viewer.locator(".pane .tok.hi").count() > 0
    assert viewer.is_disabled("[data-mode=mismatch]")           # no rollout_logprob in the file
    assert "no-alts" in viewer.get_attribute("#top-high", "class")
    assert "mismatch" not in viewer.inner_text("#charts") and "mismatch" not in viewer.inner_text("#step-stats")
    viewer.hover(".pane .resp-block .tok.hi >> nth=0")
    assert tip_alts(viewer) == [] and "rollout" not in viewer.inner_text("#tooltip")
    viewer.evaluate("location.hash = '#step=1&traj=0&mode=mismatch'")   # a link made for a v2 step
    assert viewer.get_attribute("[data-mode=marks]", "aria-pressed") == "true"


def test_summary_versions_1_and_2_read_silently_and_a_later_one_is_named(viewer, tmp_path):
    step = write_json(tmp_path / "trajectories_step_1.json", math_step(1))
    v2 = write_json(tmp_path / "summary.json", {"format_version": 2})
    viewer.load(step, v2)
    assert problems(viewer) == []
    write_json(v2, {"format_version": 3})
    viewer.load(v2)
    (cls, text), = problems(viewer)
    assert cls == "notice" and "format_version 3" in text and "versions 1 and 2" in text


def test_alternatives_texts_are_shown_visibly_and_a_sampled_token_outside_the_top_k_apart(viewer, tmp_path):
    resp = [(" start", 0.2, -0.1), (" x", 2.4, -3.0), ("\n", 2.2, -0.5), (" end", 0.1, -0.05)]
    rec = make_record(2, 0, ["Q"], resp)
    with_v2(rec, alternatives={1: [(7, " y", -0.4), (8, "\u202e", -1.2), (9, "<img src=x onerror=alert(1)>", -2.5)],
                               2: [(2002, "\n", -0.5), (10, "\t", -1.0)]})
    mark_step([rec], 0.5)
    viewer.load(write_json(tmp_path / "trajectories_step_2.json", [rec]))
    viewer.hover(".pane .resp-block .tok >> nth=1")
    assert tip_alts(viewer) == [("·y", "67.0%", False), ("⟨RLO⟩", "30.1%", False), ("<img·src=x·onerror=alert(1)>", "8.2%", False)]
    apart = viewer.inner_text("#tooltip .apart")
    assert apart == f"sampled: ·x p={100 * math.exp(-3.0):.1f}%, not in the top 3"
    assert viewer.locator("#tooltip img").count() == 0        # a text, not markup
    viewer.hover(".pane .resp-block .tok >> nth=2")
    assert tip_alts(viewer) == [("↵", "60.7%", True), ("→", "36.8%", False)]


def test_bad_v2_values_get_a_notice_naming_file_and_record_and_the_rest_opens(viewer, tmp_path):
    recs = [make_record(3, i, ["Q"], [(" a", 1.5, -0.5), (" b", 0.5, -0.2), (" c", 0.2, -0.1)], reward=float(i)) for i in range(3)]
    for r in recs:
        with_v2(r, rollout=lambda i, t: t["logprob"] - 0.01)
    mark_step(recs, 0.34)
    recs[0]["pure_generated_tokens"][0]["alternatives"] = "oops"
    recs[1]["pure_generated_tokens"][0]["alternatives"] = [{"text": 5, "logprob": -1}, {"id": 3, "text": " z", "logprob": -0.7}]
    recs[1]["pure_generated_tokens"][1]["rollout_logprob"] = "-0.5"
    recs[2]["pure_generated_tokens"][2]["rollout_logprob"] = float("nan")
    path = tmp_path / "trajectories_step_3.json"
    path.write_text(json.dumps(recs))                     # NaN written as Python writes it
    viewer.load(path)
    msgs = [t for _, t in problems(viewer)]
    repairs = next(t for t in msgs if "read with repairs" in t)
    assert repairs.startswith("trajectories_step_3.json: read with repairs")
    assert "record 0: alternatives is a string, not a list (ignored)" in repairs
    assert "record 1: an alternative that is not {id, text, logprob} (ignored)" in repairs
    assert "record 1: a rollout_logprob that is a string, not a number (ignored)" in repairs
    assert "record 2: rollout_logprob null" in repairs
    assert any("1 NaN/Infinity literal(s) read as null" in t for t in msgs)
    # The rest opens: every record, the good alternative, the mismatch of the good tokens.
    assert viewer.inner_text("#list-count") == "3 of 3"
    viewer.click("#list .vrow.traj[data-traj='1']")
    viewer.hover(".pane .resp-block .tok >> nth=0")
    assert tip_alts(viewer) == [("·z", "49.7%", False)]
    viewer.click("[data-mode=mismatch]")
    styled = viewer.eval_on_selector_all(".pane .resp-block .tok", "els => els.map(e => e.hasAttribute('style'))")
    assert styled == [True, False, True]                  # the string rollout_logprob: no mismatch


def test_mismatch_and_fork_words_across_steps_come_from_the_manifest(viewer, tmp_path):
    steps = {}
    for k, shift in [(1, 0.01), (2, 0.05), (3, 0.2)]:
        recs = math_step(k)
        for r in recs:
            with_v2(r, rollout=lambda i, t, s=shift: t["logprob"] - s * (1 + i % 2))
        steps[k] = recs
    run = write_run(tmp_path / "run", steps)
    lines = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()]
    viewer.load(run, selector="#dir-input")
    charts = viewer.inner_text("#charts")
    assert "mismatch: mean |logprob − rollout|" in charts and js_sig(lines[0]["logprob_mismatch"]["mean_abs"]) in charts
    points = viewer.eval_on_selector_all("#charts svg >> nth=4", "s => s.map(e => e.querySelectorAll('circle').length)")
    assert points == [3]                                  # every step from the manifest, only step 1 read
    viewer.keyboard.press("n"); viewer.keyboard.press("n")
    viewer.wait_loaded()
    assert js_sig(lines[2]["logprob_mismatch"]["mean_abs"]) in viewer.inner_text("#charts")
    assert "… whole step (manifest)" in viewer.inner_text("#step-stats")
    # Fork words over the run: the manifest's most frequent, with their totals.
    total = {}
    for line in lines:
        for w, c in line["fork_words"]:
            total[w] = total.get(w, 0) + c
    top = sorted(total.items(), key=lambda kv: -kv[1])[:8]
    rows = viewer.eval_on_selector_all("#fork-run tbody tr", "rs => rs.map(r => [r.cells[0].textContent, r.cells[2].textContent])")
    shown = lambda w: w.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"
    assert [(w, int(c)) for w, c in rows] == [(shown(w), c) for w, c in top]
    assert viewer.locator("#fork-run svg").count() == len(top)


def test_without_a_manifest_the_mismatch_chart_is_computed_from_the_files(viewer, tmp_path):
    paths = []
    for k, shift in [(4, 0.02), (8, 0.1)]:
        recs = math_step(k)
        for r in recs:
            with_v2(r, rollout=lambda i, t, s=shift: t["logprob"] + s)
        paths.append(write_json(tmp_path / f"trajectories_step_{k}.json", recs))
    viewer.load(*paths)
    assert viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)") == ["step 46 traj", "step 86 traj"]
    assert "0.02" in viewer.inner_text("#charts")          # step 4's mean |Δ|, from its tokens
    viewer.keyboard.press("n")
    assert "0.1" in viewer.inner_text("#charts")
    assert viewer.locator("#fork-run tbody tr").count() > 0   # fork words of the read steps


def test_alternatives_are_shown_most_probable_first_ties_in_the_files_order(viewer, tmp_path):
    rec = make_record(2, 0, ["Q"], [(" x", 2.0, -1.0)])
    with_v2(rec, alternatives={0: [(1, " c", -2.0), (2, " a", -0.5), (3, " b1", -1.0), (4, " b2", -1.0)]})
    mark_step([rec], 0.5)
    viewer.load(write_json(tmp_path / "trajectories_step_2.json", [rec]))
    viewer.hover(".pane .resp-block .tok >> nth=0")
    assert [t for t, _, _ in tip_alts(viewer)] == ["·a", "·b1", "·b2", "·c"]
    assert viewer.inner_text("#top-high tbody tr td.alts").split("  ")[0].startswith("·a")
