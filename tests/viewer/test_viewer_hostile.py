"""Hostile and broken files (issue 8): each opens in bounded time and memory, shows what it holds
as text that cannot disguise itself, and leaves the rest of the page working.

The hang guards are generous (the old page took minutes on some of these); no test asserts a time.
"""
import json
import math
import subprocess
import sys

from .records import long_token_step, make_record, mark_step, math_step, write_gzip_bomb, write_json


def problems(page):
    return page.eval_on_selector_all("#problems li", "els => els.map(e => [e.className, e.textContent])")


def steps(page):
    return page.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)")


def test_a_gzip_bomb_is_stopped_at_the_cap_with_a_message_naming_the_file(viewer, tmp_path):
    # 640 MiB of zeros in 0.6 MB of gzip: past the viewer's 512 MiB cap on what a file expands to.
    bomb = write_gzip_bomb(tmp_path / "trajectories_step_2.json.gz", 640 * 2**20)
    assert bomb.stat().st_size < 1_000_000
    good = write_json(tmp_path / "trajectories_step_1.json", math_step(1))
    viewer.load(good, bomb, timeout_s=120)
    (cls, text), = problems(viewer)
    assert cls == "error" and text.startswith("trajectories_step_2.json.gz: expands to more than 512 MiB")
    assert "decompressed" in text
    # The good file is there and the page still answers.
    assert steps(viewer) == ["step 16 traj"]
    viewer.keyboard.press("j")
    assert "trajectory #1" in viewer.inner_text(".pane .title")


def test_a_5_mb_token_is_shown_cut_with_its_length_and_searched_whole(viewer, tmp_path):
    recs, long = long_token_step(n_chars=5_000_000)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs), timeout_s=60)
    toks = viewer.locator(".pane .resp-block .tok")
    assert toks.nth(0).text_content() == " start" and toks.nth(2).text_content() == " end"
    # The span holds the token's start and says how much it leaves out.
    shown = toks.nth(1).text_content()
    assert 0 < len(shown) <= 1000 and long.startswith(shown)
    note = toks.nth(1).locator(".cut").evaluate("e => getComputedStyle(e, '::after').content")
    assert f"+{len(long) - len(shown):,} characters" in note
    # So does the tooltip, instead of holding all 5 million characters.
    toks.nth(1).hover()
    tip = viewer.inner_text("#tooltip")
    assert len(tip) < 2000 and "characters)" in tip and json.dumps(long[:50])[:-1] in tip
    # A search for "a" covers the whole text (every match counted, the hidden part included) and
    # answers: fill() waits for the page, so a page stuck for minutes fails here.
    n = recs[0]["pure_generated_text"].count("a")           # " start" holds one too
    viewer.fill("#search", "a", timeout=60_000)
    assert viewer.inner_text("#search-count") == f"1 of {n}"
    assert viewer.get_attribute(".pane .tok.hit-cur", "data-i") == "0"
    viewer.press("#search", "Enter", timeout=60_000)
    assert viewer.inner_text("#search-count") == f"2 of {n}"
    assert viewer.get_attribute(".pane .tok.hit-cur", "data-i") == "1"
    viewer.fill("#search", " end", timeout=60_000)
    assert viewer.inner_text("#search-count") == "1 of 1"
    assert viewer.get_attribute(".pane .tok.hit-cur", "data-i") == "2"


# Left edge of every character of an element, in the order the characters come in the text.
CHAR_LEFTS = """e => {
    const out = [], walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode())
        for (let i = 0; i < n.data.length; i++) {
            const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
            const b = r.getBoundingClientRect(); if (b.width > 0) out.push(b.left);
        }
    return out;
}"""


def reads_left_to_right(lefts):
    return len(lefts) > 1 and all(a < b for a, b in zip(lefts, lefts[1:]))


def test_a_right_to_left_override_is_shown_by_name_and_reorders_nothing(viewer, tmp_path):
    texts = ["Note", ":", " \u202e", "This", " is", " not", " critical"]
    recs = [make_record(1, 0, ["P"], [(t, 0.1 * (i + 1)) for i, t in enumerate(texts)],
                        info={"ke\u202ey": "This is not critical", "next": "plain words"})]
    mark_step(recs, 0.15)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    # Every token after the override reads left to right, and the tokens come in their order.
    toks = viewer.locator(".pane .resp-block .tok")
    lefts = [toks.nth(k).evaluate(CHAR_LEFTS) for k in range(3, 7)]
    assert all(reads_left_to_right(x) for x in lefts), lefts
    assert reads_left_to_right([x[0] for x in lefts])
    # The control is named where it stands; the text itself is unchanged (copying gives it back).
    rlo = toks.nth(2).locator(".bidi")
    assert rlo.evaluate("e => getComputedStyle(e, '::before').content") == '"⟨RLO⟩"'
    assert viewer.eval_on_selector(".pane .resp-block", "e => e.textContent") == "".join(texts)
    # In the metadata the key shows the control by name, and neither it nor the value after it
    # (nor the next key) is reversed.
    meta = viewer.locator(".pane .meta >> nth=0")
    assert "ke⟨RLO⟩y This is not critical" in meta.inner_text()
    for text in ["This is not critical", "plain words", "next"]:
        assert reads_left_to_right(meta.locator("bdi", has_text=text).last.evaluate(CHAR_LEFTS)), text
    # The tooltip quotes the token with the control escaped.
    toks.nth(2).hover()
    assert '" \\u202e"' in viewer.inner_text("#tooltip")


META_ITEMS = """els => els.map(s => { const k = s.querySelector('b').textContent;
                                    return [k.trim(), s.textContent.slice(k.length)]; })"""


def test_a_proto_key_in_info_stays_a_key_and_fakes_no_reward(viewer, tmp_path):
    recs = [make_record(1, 0, ["P"], [(" a", 1.0), (" b", 0.5)], reward=1.0, info={"kl": 0.5})]
    recs[0]["info"]["__proto__"] = {"reward": 99}
    mark_step(recs, 0.5)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    items = viewer.eval_on_selector_all(".pane .meta:not(.stats-block) > span", META_ITEMS)
    keys = [k for k, _ in items]
    assert keys.count("reward") == 1 and dict(items)["reward"] == "1"
    assert dict(items)["__proto__"] == '{"reward":99}' and dict(items)["kl"] == "0.500"
    assert "99" not in viewer.inner_text("#list")


def test_entropies_near_the_largest_double_keep_every_figure_finite(viewer, tmp_path):
    console = []
    viewer.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    big, top = 1e308, 1.7976931348623157e308
    mixed = [big, big, top, 0.5, 2.0, big]
    a = [make_record(1, 0, ["P"], [(f" m{i}", e) for i, e in enumerate(mixed)])]
    b = [make_record(2, 0, ["P"], [(f" c{i}", big) for i in range(4)]),
         make_record(2, 1, ["P"], [(f" d{i}", big) for i in range(3)])]
    mark_step(a, 0.3)
    mark_step(b, 0.3)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", a), write_json(tmp_path / "trajectories_step_2.json", b))
    for ents in (mixed, [big] * 7):
        stats = dict(zip(viewer.eval_on_selector_all("#step-stats dt", "els => els.map(e => e.textContent)"),
                         viewer.eval_on_selector_all("#step-stats dd", "els => els.map(e => e.textContent)")))
        expected = sum(e / len(ents) for e in ents)          # a plain sum would overflow
        assert math.isclose(float(stats["mean entropy"]), expected, rel_tol=1e-9), stats
        # The histogram draws every token, each bar with a width.
        bars = viewer.eval_on_selector_all("#hist rect", "els => els.map(e => [+e.getAttribute('width'), e.textContent])")
        assert bars and all(w > 0 for w, _ in bars)
        assert sum(int(t.rsplit(": ", 1)[1]) for _, t in bars) == len(ents)
        viewer.click("[data-mode=heatmap]")
        assert "NaN" not in "".join(viewer.eval_on_selector_all(".pane .tok[style]", "els => els.map(e => e.getAttribute('style'))"))
        viewer.click("[data-mode=marks]")
        viewer.keyboard.press("n")
    assert "mean H 1e+308" in viewer.inner_text(".pane .stats-block")
    # No SVG attribute anywhere holds NaN or Infinity, and the browser logged no error about one.
    attrs = viewer.evaluate("[...document.querySelectorAll('svg, svg *')].flatMap(e => [...e.attributes].map(a => a.value))")
    assert not [v for v in attrs if "NaN" in v or "Infinity" in v]
    assert console == []


def test_an_empty_step_file_opens_as_a_step_with_no_trajectories(viewer, tmp_path):
    empty = tmp_path / "trajectories_step_3.json"
    empty.write_text("[]")                                     # what the saver writes for an empty batch
    check = subprocess.run([sys.executable, "-m", "openrlhf_ext.trajectory", "validate", str(empty)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr  # validate accepts it: so does the viewer
    viewer.load(empty, write_json(tmp_path / "trajectories_step_5.json", math_step(5)))
    (cls, text), = problems(viewer)
    assert cls == "notice" and text.startswith("trajectories_step_3.json: step 3 has no trajectories")
    assert steps(viewer) == ["step 30 traj", "step 56 traj"]
    assert "step 5 · trajectory #0" in viewer.inner_text(".pane .title")   # a step with trajectories first
    viewer.keyboard.press("p")
    assert viewer.inner_text("#no-trajs") == "Step 3 has no trajectories (an empty batch)."
    assert viewer.locator(".pane").count() == 0 and viewer.inner_text("#list-count") == "0 of 0"
    assert "trajectories\n0" in viewer.inner_text("#step-stats")
    viewer.keyboard.press("n")
    assert "step 5 · trajectory #0" in viewer.inner_text(".pane .title")
