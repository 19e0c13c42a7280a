"""What a person sees when reading a step: marks, heatmap, tooltips, whitespace, toggles,
the trajectory list (sort, filter, groups), keyboard navigation and the URL hash."""
import math

from .records import make_record, mark_step, math_step, write_json

# Tokens chosen so the test knows every value: entropy, logprob, the whitespace ones.
RESPONSE = [("Let", 0.10, -0.05), (" x", 2.50, -1.20), (" ", 0.30, -0.1), ("\n", 1.90, -0.7),
            ("\t", 0.20, -0.02), ("", 0.05, -0.01), (" be", 2.90, -2.0), (" 7", 0.40, -0.3)]


def one_step(tmp_path, step=5):
    recs = [make_record(step, 0, ["Q", ":"], RESPONSE, group_index=0, reward=1.0, advantages=0.5, ret=0.25,
                        info={"kl": 0.01}),
            make_record(step, 1, ["Q", ":"], [(" a", 1.0, -0.5), (" b", 0.2, -0.1)], group_index=0, reward=0.0,
                        advantages=-0.5, ret=-0.25)]
    tau = mark_step(recs, ratio=0.3)
    return write_json(tmp_path / f"trajectories_step_{step}.json", recs), recs, tau


def test_marks_follow_the_files_high_entropy_flags(viewer, tmp_path):
    path, recs, tau = one_step(tmp_path)
    viewer.load(path)
    marked = viewer.eval_on_selector_all(".pane .tok.hi", "els => els.map(e => e.textContent)")
    expected = [t["text"] for t in recs[0]["pure_generated_tokens"] if t["high_entropy"]]
    assert marked == expected == [" x", "\n", " be"]
    # A marked token is painted; an ordinary one is not.
    bg_hi = viewer.eval_on_selector(".pane .tok.hi", "e => getComputedStyle(e).backgroundColor")
    bg_lo = viewer.eval_on_selector(".pane .tok:not(.hi)", "e => getComputedStyle(e).backgroundColor")
    assert bg_hi not in ("rgba(0, 0, 0, 0)", "transparent") and bg_lo == "rgba(0, 0, 0, 0)"
    # Per-trajectory statistics: 8 tokens, 3 high.
    head = viewer.inner_text(".pane .pane-head")
    assert "tokens 8" in head and "high-entropy 3" in head and "37.5%" in head
    assert "kl 0.010" in head and "reward 1" in head


def test_heatmap_colours_tokens_on_viridis_scaled_to_step_percentiles(viewer, tmp_path):
    path, recs, _ = one_step(tmp_path)
    viewer.load(path)
    viewer.click("[data-mode=heatmap]")
    colours = viewer.eval_on_selector_all(".pane .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    # Highest entropy (2.9, above p95) gets the top of viridis, the lowest (0.05) the bottom.
    assert colours[6] == "rgb(253, 231, 37)"
    assert colours[5] == "rgb(68, 1, 84)"
    assert len(set(colours)) >= 5                      # a continuous scale, not two colours
    assert viewer.is_visible("#legend")
    assert "nats" in viewer.inner_text("#legend")
    # Back to marks: the same spans (not rebuilt), coloured by marks again.
    viewer.evaluate("document.querySelector('.pane .resp-block .tok').__keep = 1")
    viewer.click("[data-mode=marks]")
    assert viewer.evaluate("document.querySelector('.pane .resp-block .tok').__keep") == 1
    assert not viewer.is_visible("#legend")


def test_tooltip_on_hover_and_on_keyboard_focus(viewer, tmp_path):
    path, recs, _ = one_step(tmp_path)
    viewer.load(path)
    viewer.hover(".pane .tok >> nth=1")
    tip = viewer.inner_text("#tooltip")
    assert '" x"' in tip and "2.5000 nats" in tip
    assert f"{math.exp(-1.2):.4f}" in tip                  # probability from logprob
    assert "2001" in tip and "1 of 8" in tip                # token id, position
    assert "rank in step" in tip and "2 of 10" in tip       # 2.9 is first, 2.5 second of the step's 10
    # Keyboard: Tab reaches the first token, arrows move, the tooltip follows the focus.
    viewer.mouse.move(0, 0)
    viewer.focus(".pane .tok >> nth=0")
    assert '"Let"' in viewer.inner_text("#tooltip")
    viewer.keyboard.press("ArrowRight")
    viewer.keyboard.press("ArrowRight")
    assert viewer.is_visible("#tooltip")
    assert '" "' in viewer.inner_text("#tooltip") and "2 of 8" in viewer.inner_text("#tooltip")


def test_whitespace_and_empty_tokens_stay_visible(viewer, tmp_path):
    path, _, _ = one_step(tmp_path)
    viewer.load(path)
    boxes = viewer.eval_on_selector_all(".pane .tok", "els => els.map(e => e.getBoundingClientRect().width)")
    assert all(w > 0 for w in boxes), boxes                 # space, newline, tab and "" all take room
    glyph = lambda sel, pseudo: viewer.eval_on_selector(sel, f"e => getComputedStyle(e, '{pseudo}').content")
    assert glyph(".pane .tok >> nth=3 >> .nl", "::before") == '"↵"'
    assert glyph(".pane .tok >> nth=4 >> .tab", "::before") == '"→"'
    assert glyph(".pane .tok >> nth=5", "::before") == '"∅"'
    assert glyph(".pane .tok >> nth=2 >> .sp", "::after") == '"·"'
    # The text itself is unchanged: copying the response gives the real characters.
    assert viewer.eval_on_selector(".pane .resp-block", "e => e.textContent") == "".join(t[0] for t in RESPONSE)


def test_display_toggles_flip_without_rebuilding(viewer, tmp_path):
    path, _, _ = one_step(tmp_path)
    viewer.load(path)
    viewer.evaluate("document.querySelector('.pane .resp-block .tok').__keep = 1")
    viewer.uncheck("[data-toggle=meta]")
    assert not viewer.is_visible(".pane .meta >> text=advantages")
    viewer.uncheck("[data-toggle=stats]")
    assert not viewer.is_visible(".pane .stats-block") and not viewer.is_visible("#step-stats")
    viewer.check("[data-toggle=scores]")
    assert viewer.eval_on_selector(".pane .tok.hi", "e => getComputedStyle(e, '::after').content") == '"2.50"'
    viewer.check("[data-toggle=prompt]")
    assert viewer.inner_text(".pane .prompt-block") == "Q:"
    viewer.uncheck("[data-toggle=prompt]")
    assert not viewer.is_visible(".pane .prompt-block")
    assert viewer.evaluate("document.querySelector('.pane .resp-block .tok').__keep") == 1
    viewer.check("[data-toggle=compare]")                   # the group's two responses side by side
    assert viewer.locator(".pane").count() == 2


def test_list_sorts_filters_and_groups_by_prompt(viewer, tmp_path):
    recs = math_step(3, n_groups=2, per_group=3)
    viewer.load(write_json(tmp_path / "trajectories_step_3.json", recs))
    assert viewer.locator("#list .vrow.group").count() == 2
    viewer.uncheck("#lf-group")
    viewer.click("#list-head [data-key=advantages]")        # first click: descending
    shown = viewer.eval_on_selector_all("#list .vrow.traj", "els => els.map(e => e.dataset.traj|0)")
    assert shown == sorted(range(6), key=lambda i: -recs[i]["advantages"])
    viewer.click("#list-head [data-key=advantages]")
    shown = viewer.eval_on_selector_all("#list .vrow.traj", "els => els.map(e => e.dataset.traj|0)")
    assert shown == sorted(range(6), key=lambda i: recs[i]["advantages"])
    viewer.select_option("#lf-field", "length")
    viewer.fill("#lf-min", "40")
    keep = [i for i, r in enumerate(recs) if r["info"]["response_length"] >= 40]
    shown = viewer.eval_on_selector_all("#list .vrow.traj", "els => els.map(e => e.dataset.traj|0)")
    assert sorted(shown) == keep
    assert viewer.inner_text("#list-count") == f"{len(keep)} of 6"


def test_keyboard_navigation_and_hash_restore(viewer, tmp_path):
    a = write_json(tmp_path / "trajectories_step_2.json", math_step(2))
    b = write_json(tmp_path / "trajectories_step_10.json", math_step(10))
    viewer.load(b, a)
    steps = viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)")
    assert steps[0].startswith("step 2") and steps[1].startswith("step 10")   # numeric, not "10" < "2"
    viewer.keyboard.press("j")
    viewer.keyboard.press("j")
    assert "trajectory #2" in viewer.inner_text(".pane .title")
    viewer.keyboard.press("k")
    assert "trajectory #1" in viewer.inner_text(".pane .title")
    box = viewer.locator("#charts svg >> nth=0").bounding_box()       # a click on a chart picks that step
    viewer.mouse.click(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
    assert "step 10 · trajectory #0" in viewer.inner_text(".pane .title")
    viewer.keyboard.press("p")
    assert "step 2 · trajectory #0" in viewer.inner_text(".pane .title")
    viewer.keyboard.press("n")
    assert "step 10 · trajectory #0" in viewer.inner_text(".pane .title")
    viewer.keyboard.press("j")
    assert viewer.evaluate("location.hash") == "#step=10&traj=1"
    viewer.keyboard.press("/")
    assert viewer.evaluate("document.activeElement.id") == "search"
    viewer.keyboard.press("Escape")
    viewer.keyboard.press("?")
    assert viewer.is_visible("#help")
    viewer.keyboard.press("Escape")
    # Reload: the hash survives; picking the same files comes back to the same view.
    viewer.reload()
    viewer.load(a, b)
    assert "step 10 · trajectory #1" in viewer.inner_text(".pane .title")
    assert viewer.get_attribute("#list .vrow.traj[aria-selected=true]", "data-traj") == "1"


def test_long_response_is_built_lazily(viewer, tmp_path):
    resp = [(f" w{i}", (i % 97) / 40, -0.1) for i in range(5000)]
    resp[4321] = (" needle", 3.5, -2.0)
    recs = [make_record(1, 0, ["P"], resp)]
    mark_step(recs)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    built = viewer.locator(".pane .tok").count()
    assert 0 < built < 1500                               # not all 5000 at once
    viewer.fill("#search", "needle")
    assert viewer.inner_text("#search-count") == "1 of 1"
    hit = viewer.locator(".pane .tok.hit-cur")
    assert hit.inner_text() == " needle" and hit.is_visible()



def test_scrolling_down_a_long_response_builds_the_rest(viewer, tmp_path):
    # The pane builds tokens as its end comes into view; the end must keep coming, chunk after
    # chunk, while the reader scrolls (not stop once the first chunks are on screen).
    resp = [(f" w{i}", (i % 97) / 40, -0.1) for i in range(5000)]
    recs = [make_record(1, 0, ["P"], resp)]
    mark_step(recs)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    for _ in range(200):                                   # hang guard: 200 scrolls
        if viewer.locator(".pane .tok").count() == 5000:
            break
        viewer.evaluate("document.querySelector('.pane-body').scrollTop = 1e9")
        viewer.wait_for_timeout(50)
    assert viewer.locator(".pane .tok").count() == 5000
    assert viewer.locator(".pane .tok >> nth=4999").inner_text() == " w4999"

# A mode as the next one will be written: one entry of the registry, nothing else.
PARITY_MODE = """() => window.__viewer.modes.push({
    id: 'parity', label: 'Parity', title: 'even positions', available: (s) => s.step === 2,
    scale: () => null, value: (c, i) => i, colour: (v) => (v % 2 ? '' : '--h:rgb(1, 2, 3);--hc:#fff'),
    score: (v) => 'p' + v, legend: () => ({ lo: 'odd', hi: 'even', bar: 'red', note: 'token parity' }) })"""


def test_a_mode_added_to_the_registry_gets_button_colours_legend_and_hash(viewer, tmp_path):
    a = write_json(tmp_path / "trajectories_step_1.json", math_step(1))
    b = write_json(tmp_path / "trajectories_step_2.json", math_step(2))
    viewer.evaluate(PARITY_MODE)
    viewer.load(a, b)
    button = viewer.locator("[data-mode=parity]")
    assert button.inner_text() == "Parity" and button.is_disabled()      # not available at step 1
    viewer.keyboard.press("n")
    button.click()
    assert button.get_attribute("aria-pressed") == "true"
    assert viewer.get_attribute("[data-mode=marks]", "aria-pressed") == "false"
    colours = viewer.eval_on_selector_all(".pane .resp-block .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert colours[0::2] == ["rgb(1, 2, 3)"] * len(colours[0::2]) and "rgb(1, 2, 3)" not in colours[1::2]
    viewer.check("[data-toggle=scores]")
    assert viewer.eval_on_selector(".pane .resp-block .tok >> nth=3", "e => getComputedStyle(e, '::after').content") == '"p3"'
    assert viewer.is_visible("#legend") and "token parity" in viewer.inner_text("#legend")
    assert "mode=parity" in viewer.evaluate("location.hash")
    # Back at step 1 the mode does not apply: the tokens are drawn in the default mode.
    viewer.keyboard.press("p")
    assert viewer.locator(".pane .tok[style]").count() == viewer.locator(".pane .resp-block .tok.hi").count()
    # The hash accepts the new id like the built-in ones.
    viewer.reload()
    viewer.evaluate(PARITY_MODE)
    viewer.evaluate("location.hash = '#step=2&traj=0&mode=parity'")
    viewer.load(a, b)
    assert viewer.get_attribute("[data-mode=parity]", "aria-pressed") == "true"
    assert viewer.eval_on_selector(".pane .resp-block .tok", "e => getComputedStyle(e).backgroundColor") == "rgb(1, 2, 3)"
