"""The reading tools: token search, entropy range, top-K, fork words, token table, CSV export."""
import csv
import io

from .records import make_record, mark_step, math_step, write_json


def load_math(viewer, tmp_path, step=3):
    recs = math_step(step, n_groups=2, per_group=3)
    viewer.load(write_json(tmp_path / f"trajectories_step_{step}.json", recs))
    return recs


def count_overlapping(text, q):
    return sum(1 for i in range(len(text)) if text.startswith(q, i))


def test_search_counts_matches_and_steps_through_them(viewer, tmp_path):
    recs = load_math(viewer, tmp_path)
    resp = recs[0]["pure_generated_text"]
    q = "e"                                         # case-insensitive, can span token boundaries
    n = count_overlapping(resp.lower(), q)
    assert n >= 2
    viewer.fill("#search", "E")
    assert viewer.inner_text("#search-count") == f"1 of {n}"
    viewer.press("#search", "Enter")
    assert viewer.inner_text("#search-count") == f"2 of {n}"
    viewer.press("#search", "Shift+Enter")
    viewer.press("#search", "Shift+Enter")
    assert viewer.inner_text("#search-count") == f"{n} of {n}"
    assert "e" in viewer.inner_text(".pane .tok.hit-cur").lower()
    viewer.fill("#search", " the")
    m = count_overlapping(resp.lower(), " the")
    assert viewer.inner_text("#search-count") == (f"1 of {m}" if m else "0 of 0")
    viewer.fill("#search", "zzzz-not-there")
    assert viewer.inner_text("#search-count") == "0 of 0"
    assert viewer.locator(".pane .tok.hit").count() == 0


def test_entropy_range_dims_tokens_outside(viewer, tmp_path):
    recs = load_math(viewer, tmp_path)
    ents = [t["entropy_score"] for t in recs[0]["pure_generated_tokens"]]
    viewer.fill("#emin", "0.5")
    viewer.fill("#emax", "2")
    dimmed = viewer.eval_on_selector_all(".pane .tok", "els => els.map(e => e.classList.contains('dim'))")
    assert dimmed == [not (0.5 <= e <= 2) for e in ents]
    # Dimmed: faded text, no mark or heat colour behind it.
    i = dimmed.index(True)
    style = lambda k: viewer.eval_on_selector(f".pane .tok >> nth={k}", "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
    j = dimmed.index(False)
    assert style(i)[0] != style(j)[0] and style(i)[1] == "rgba(0, 0, 0, 0)"
    viewer.fill("#emin", "")
    viewer.fill("#emax", "")
    assert viewer.locator(".pane .tok.dim").count() == 0


def test_top_k_tables_and_click_to_jump(viewer, tmp_path):
    recs = load_math(viewer, tmp_path)
    allt = [(t["entropy_score"], ri, i) for ri, r in enumerate(recs) for i, t in enumerate(r["pure_generated_tokens"])]
    viewer.fill("#topk", "3")
    rows = viewer.eval_on_selector_all("#top-high tbody tr", "els => els.map(e => [+e.cells[0].textContent, +e.dataset.traj, +e.dataset.tok])")
    top = sorted(allt, key=lambda x: -x[0])[:3]
    assert [r[0] for r in rows] == [round(e, 3) for e, _, _ in top]
    low = viewer.eval_on_selector_all("#top-low tbody tr", "els => els.map(e => +e.cells[0].textContent)")
    assert low == [round(e, 3) for e, _, _ in sorted(allt)[:3]]
    # Context: the token is shown with its neighbours, the token itself highlighted.
    _, ri, i = top[2]
    tok = recs[ri]["pure_generated_tokens"][i]["text"]
    viewer.click("#top-high tbody tr >> nth=2")
    assert f"trajectory #{ri}" in viewer.inner_text(".pane .title")
    focused = viewer.evaluate("[document.activeElement.dataset.i, document.activeElement.textContent]")
    assert focused == [str(i), tok]
    assert viewer.is_visible("#tooltip")
    assert f"tok={i}" in viewer.evaluate("location.hash")


def test_fork_words_table_filters_the_list(viewer, tmp_path):
    recs = load_math(viewer, tmp_path)
    counts = {}
    for r in recs:
        for t in r["pure_generated_tokens"]:
            if t["high_entropy"]:
                counts[t["text"]] = counts.get(t["text"], 0) + 1
    best = max(counts.values())
    first = viewer.eval_on_selector("#forks tbody tr", "e => [e.dataset.word, +e.cells[1].textContent]")
    assert first[1] == best and counts[first[0]] == best
    viewer.click("#forks tbody tr >> nth=0")
    having = [i for i, r in enumerate(recs) if any(t["high_entropy"] and t["text"] == first[0] for t in r["pure_generated_tokens"])]
    shown = viewer.eval_on_selector_all("#list .vrow.traj", "els => els.map(e => +e.dataset.traj)")
    assert sorted(shown) == having
    assert viewer.locator("#fork-chip .chip").is_visible()
    viewer.click("#fork-chip button")
    assert viewer.locator("#list .vrow.traj").count() == len(recs)


def test_token_table_sorts(viewer, tmp_path):
    recs = load_math(viewer, tmp_path)
    ents = [t["entropy_score"] for t in recs[0]["pure_generated_tokens"]]
    pos = lambda: viewer.eval_on_selector_all("#toktable .vrow", "els => els.map(e => +e.dataset.tok)")
    assert pos()[:5] == [0, 1, 2, 3, 4]
    viewer.select_option("#tt-sort", "desc")
    got = pos()
    assert [ents[i] for i in got] == sorted(ents, reverse=True)[:len(got)]
    viewer.select_option("#tt-sort", "asc")
    got = pos()
    assert [ents[i] for i in got] == sorted(ents)[:len(got)]


def test_csv_of_tokens_is_rfc4180_and_neutralises_formulas(viewer, tmp_path):
    texts = ["=SUM(A1)", "+1", "-2", "@cmd", 'say "hi", ok', "line\nbreak", " plain"]
    recs = [make_record(1, 0, ["P"], [(t, 0.1 * (i + 1), -0.1 * (i + 1)) for i, t in enumerate(texts)])]
    mark_step(recs, 0.3)
    viewer.load(write_json(tmp_path / "trajectories_step_1.json", recs))
    with viewer.expect_download() as dl:
        viewer.click("[data-action=csv-tokens]")
    raw = open(dl.value.path(), "rb").read().decode("utf-8")
    assert raw.endswith("\r\n") and "\r\n" in raw
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert rows[0][:4] == ["position", "text", "entropy", "high_entropy"]
    assert [r[1] for r in rows[1:]] == ["'=SUM(A1)", "'+1", "'-2", "'@cmd", 'say "hi", ok', "line\nbreak", " plain"]
    assert [float(r[2]) for r in rows[1:]] == [t["entropy_score"] for t in recs[0]["pure_generated_tokens"]]
    assert float(rows[1][5]) < 0                          # a negative number stays a number
    assert [r[3] for r in rows[1:]] == ["true" if t["high_entropy"] else "false" for t in recs[0]["pure_generated_tokens"]]
    with viewer.expect_download() as dl:
        viewer.click("[data-action=csv-topk]")
    rows = list(csv.reader(io.StringIO(open(dl.value.path(), encoding="utf-8").read(), newline="")))
    assert rows[0][:4] == ["table", "rank", "entropy", "text"] and rows[1][0] == "highest"
    assert rows[1][3] == " plain" and any(r[3] == "'=SUM(A1)" for r in rows if r[0] == "lowest")
