"""Viewer speed on big files: viewer/render_trajectories.html against a naive page, same run.

    python benchmarks/bench_viewer.py [--sizes 10,100] [--lean-mb 100] [--repeat 3] [--data DIR]
    python benchmarks/bench_viewer.py --hostile [--baseline main] [--cap 120] [--bomb-gb 3]
    python benchmarks/bench_viewer.py --run-gb 2 [--step-mb 50] [--baseline main] [--cap 240] [--rss-cap-gb 8]

--hostile measures the hostile files of issue 8 instead (a 5 MB token, a gzip bomb) against the
page of --baseline, in the same run: see benchmarks/viewer_hostile.py.
--run-gb measures a whole run folder of that size (issue 11: first trajectory, another step
picked, memory) against the page of --baseline, in the same run: see benchmarks/viewer_run.py.

Generates trajectory files (benchmarks/gen_big_trajectories.py), opens each in headless Debian
Chromium through the page's file input, and times, inside the page (performance.now()):
  first render  from the file input's change event to the first paint with tokens on screen
                (file read, then the viewer shows a big file's first record while it parses the rest);
  all loaded    until every record is parsed and every panel drawn (the naive page: = first render);
  search        typing a query into the token search until the next paint;
  filter        setting the entropy range minimum until the next paint;
  next traj     (viewer only) pressing j, until the next paint.
The baseline, benchmarks/naive_viewer.html, builds a span for every token of every trajectory at
once and walks them all on search / filter, as a simple viewer does. Medians of --repeat (5) runs, 1 s after the load
for search / filter (one run on the naive page). Targets (issue 3): first render < 2 s on 100 MB, search / filter < 100 ms.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gen_big_trajectories import generate  # noqa: E402
from viewer_hostile import run_hostile  # noqa: E402
from viewer_run import run_folder_bench  # noqa: E402

VIEWER = HERE.parent / "viewer" / "render_trajectories.html"
NAIVE = HERE / "naive_viewer.html"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

AFTER_PAINT = "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"


def timed_input(page, sel, value):
    """ms from setting an input's value (and its input event) to the next paint."""
    return page.evaluate(f"""async ([sel, value]) => {{
        const el = document.querySelector(sel), t0 = performance.now();
        el.value = value; el.dispatchEvent(new Event('input', {{bubbles: true}}));
        await {AFTER_PAINT};
        return performance.now() - t0;
    }}""", [sel, value])


def timed_key(page, key):
    return page.evaluate(f"""async (key) => {{
        const t0 = performance.now();
        document.body.dispatchEvent(new KeyboardEvent('keydown', {{key, bubbles: true}}));
        await {AFTER_PAINT};
        return performance.now() - t0;
    }}""", key)


def measure(browser, page_path, data, repeat, is_viewer):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(300_000)
    page.goto(page_path.as_uri())
    wall0 = time.perf_counter()
    page.set_input_files("#file-input", str(data))
    while not page.evaluate("() => window.__viewer.timings.firstPaint"):
        time.sleep(0.02)
    wall = time.perf_counter() - wall0
    while not page.evaluate("() => window.__viewer.timings.loadEnd"):
        time.sleep(0.02)
    t = page.evaluate("() => window.__viewer.timings")
    out = {"first_render_ms": t["firstPaint"] - t["loadStart"], "wall_s": wall,
           "all_loaded_ms": max(t["loadEnd"], t["firstPaint"]) - t["loadStart"],
           "dom_nodes": page.evaluate("() => document.getElementsByTagName('*').length"),
           "heap_mb": (page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0") or 0) / 1e6}
    # Let the collector finish with the parse's garbage (1M+ token objects): it belongs to the
    # load, not to the first search. The pause is not part of any figure.
    page.wait_for_timeout(1000)
    search, filt, nxt = [], [], []
    for k in range(repeat if is_viewer else 1):     # the naive page takes seconds per action
        search.append(timed_input(page, "#search", ["answer", "the", "wait"][k % 3]))
        filt.append(timed_input(page, "#emin", ["1.0", "0.5", "1.5"][k % 3]))
        timed_input(page, "#emin", "")
        if is_viewer:
            nxt.append(timed_key(page, "j"))
    out["search_ms"] = statistics.median(search)
    out["filter_ms"] = statistics.median(filt)
    out["next_ms"] = statistics.median(nxt) if nxt else None
    if is_viewer:
        assert page.locator(".pane .tok").count() > 0, "viewer shows no tokens"
        out["phases"] = " ".join(f"{k.split(' ')[0]}={v}" for k, v in t.get("phases") or [])
        out["count"] = page.inner_text("#search-count")
    ctx.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100", help="MB of full-format files to generate")
    ap.add_argument("--lean-mb", type=int, default=100, help="MB of a lean file (~850 x 2000 at 100); 0 to skip")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default=None, help="folder for the generated files (default: a temp dir)")
    ap.add_argument("--naive-lean", action="store_true", help="also run the naive page on the lean file (1.7 M spans: minutes)")
    ap.add_argument("--hostile", action="store_true", help="the hostile files of issue 8 against --baseline instead")
    ap.add_argument("--baseline", default="main", help="git revision whose viewer is the baseline of --hostile")
    ap.add_argument("--cap", type=float, default=120, help="--hostile: seconds a page may take on a case before it is stopped")
    ap.add_argument("--bomb-gb", type=float, default=3, help="--hostile: GiB of zeros the gzip bomb expands to")
    ap.add_argument("--run-gb", type=float, default=0, help="a run folder of this many GB against --baseline instead")
    ap.add_argument("--step-mb", type=int, default=50, help="--run-gb: MB per step file")
    ap.add_argument("--rss-cap-gb", type=float, default=8, help="--run-gb: a page is stopped past this much RSS")
    ap.add_argument("--keep-data", action="store_true", help="--run-gb: keep the generated folder")
    a = ap.parse_args()
    exe = shutil.which("chromium")
    if not exe:
        sys.exit("chromium not found on PATH (apt-get install -y chromium)")
    data_dir = Path(a.data or tempfile.mkdtemp(prefix="bench_viewer_"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if a.hostile:
        run_hostile(data_dir, a.baseline, a.cap, a.bomb_gb)
        return
    if a.run_gb:
        run_folder_bench(data_dir, a.run_gb, a.step_mb, a.baseline, a.cap, a.rss_cap_gb, a.keep_data)
        return
    cases = [(f"{mb} MB", data_dir / f"full_{mb}mb" / "trajectories_step_1.json", mb, False) for mb in map(int, a.sizes.split(","))]
    if a.lean_mb:
        cases.append((f"{a.lean_mb} MB lean", data_dir / f"lean_{a.lean_mb}mb" / "trajectories_step_1.json", a.lean_mb, True))
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS + ["--js-flags=--max-old-space-size=8192"])
        for label, path, mb, lean in cases:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                n = generate(path, mb, lean=lean)
                (path.parent / "count").write_text(str(n))
            n = int((path.parent / "count").read_text())
            shape = f"{n} x 2000"
            size = f"{os.path.getsize(path) / 1e6:.0f} MB"
            print(f"# {label}: {size}, {shape} tokens", flush=True)
            for name, page_path, is_viewer in [("viewer", VIEWER, True), ("naive", NAIVE, False)]:
                if not is_viewer and lean and not a.naive_lean:
                    continue
                try:
                    r = measure(browser, page_path, path, a.repeat, is_viewer)
                except Exception as e:  # the naive page may die on big files: say so, keep going
                    r = {"error": str(e).splitlines()[0][:80]}
                rows.append((label, shape, name, r))
                print(f"  {name}: {r}", flush=True)
        browser.close()
    print()
    print("| file | trajectories x tokens | page | first render | all loaded | search | filter | next (j) | DOM nodes | JS heap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, shape, name, r in rows:
        if "error" in r:
            print(f"| {label} | {shape} | {name} | failed: {r['error']} | | | | | | |")
            continue
        nx = f"{r['next_ms']:.0f} ms" if r["next_ms"] is not None else "—"
        print(f"| {label} | {shape} | {name} | {r['first_render_ms'] / 1000:.2f} s | {r['all_loaded_ms'] / 1000:.2f} s | {r['search_ms']:.1f} ms | "
              f"{r['filter_ms']:.1f} ms | {nx} | {r['dom_nodes']:,} | {r['heap_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
