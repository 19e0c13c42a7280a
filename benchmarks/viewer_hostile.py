"""Hostile files in the viewer, against a baseline page, same run (`bench_viewer.py --hostile`).

    python benchmarks/bench_viewer.py --hostile [--baseline main] [--cap 120] [--bomb-gb 3]

Two cases of issue 8 (and a small ordinary file, the memory floor), each opened in headless Debian
Chromium by the current page and by the baseline page (`git show BASELINE:viewer/render_trajectories.html`):
  token  one response whose middle token is 5,000,000 characters of words and spaces. Figures:
         first render (file input's change event to the first paint with tokens), the longest
         main-thread task while loading (PerformanceObserver "longtask": how long the page
         could not answer), a search for "a" (input event to the next paint), the characters
         the tooltip of that token holds, and the peak memory.
  bomb   a .json.gz of BOMB_GB GiB of zeros (about 1 MB of gzip per GiB). Figures: time until the
         page has answered (an error shown), the message, and the peak memory.
Peak memory is the peak of the summed RSS of the browser's processes (and Playwright's driver),
sampled every 50 ms: what the machine sees. Each page and case runs in a child process that is
killed at --cap seconds; a figure it did not reach is reported as "> cap".
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from tests.viewer.records import long_token_step, math_step, write_gzip_bomb, write_json  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--enable-precise-memory-info"]
AFTER_PAINT = "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
LONGTASKS = """() => { window.__long = 0;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long = Math.max(window.__long, e.duration); })
        .observe({ type: 'longtask', buffered: true }); }"""


def make_cases(data_dir: Path, bomb_gb: float) -> dict:
    """The two files, written once into data_dir and reused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    small = data_dir / "small" / "trajectories_step_1.json"       # the floor: a small ordinary file
    if not small.exists():
        small.parent.mkdir(parents=True, exist_ok=True)
        write_json(small, math_step(1))
    token = data_dir / "token_5mb" / "trajectories_step_1.json"
    if not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        write_json(token, long_token_step(n_chars=5_000_000)[0])
    bomb = data_dir / f"bomb_{bomb_gb:g}gb" / "trajectories_step_1.json.gz"
    if not bomb.exists():
        bomb.parent.mkdir(parents=True, exist_ok=True)
        write_gzip_bomb(bomb, int(bomb_gb * 2**30))
    return {"small": small, "token": token, "bomb": bomb}


class PeakRSS:
    """Peak of the summed RSS of this process's children (Playwright's driver and the browser)."""

    def __init__(self):
        import psutil
        self.me, self.peak = psutil.Process(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:                                  # a daemon thread: ends with the child process
            total = 0
            for p in self.me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except Exception:                     # a process that just ended
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)


def say(**figures):
    print(json.dumps(figures), flush=True)           # one line per figure: the parent keeps what came


def probe(page_path: str, data: str, case: str) -> None:
    """Child process: open `data` in `page_path`, print each figure as a JSON line as soon as known."""
    from playwright.sync_api import sync_playwright
    rss = PeakRSS()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(Path(page_path).as_uri())
        page.evaluate(LONGTASKS)
        page.set_input_files("#file-input", data)
        for key in ("firstPaint", "loadEnd"):             # the first paint is said before the load ends
            while not page.evaluate(f"() => window.__viewer.timings.{key}"):
                time.sleep(0.02)
                say(peak_rss_mb=rss.peak / 1e6)
            t = page.evaluate("() => window.__viewer.timings")
            say(first_render_s=(t["firstPaint"] - t["loadStart"]) / 1000, longest_task_s=page.evaluate("() => window.__long") / 1000)
        say(load_s=(t["loadEnd"] - t["loadStart"]) / 1000, peak_rss_mb=rss.peak / 1e6)
        if case != "token":
            say(message=page.inner_text("#problems")[:160], peak_rss_mb=rss.peak / 1e6)
            return
        page.hover(".pane .resp-block .tok >> nth=1")
        say(tooltip_chars=len(page.inner_text("#tooltip")))
        ms = page.evaluate(f"""async () => {{
            const el = document.querySelector('#search'), t0 = performance.now();
            el.value = 'a'; el.dispatchEvent(new Event('input', {{bubbles: true}}));
            await {AFTER_PAINT};
            return performance.now() - t0;
        }}""")
        say(search_s=ms / 1000, search_count=page.inner_text("#search-count"), peak_rss_mb=rss.peak / 1e6)
        browser.close()


def run_one(page: Path, data: Path, case: str, cap: float) -> dict:
    """One page on one case in a child process killed after `cap` seconds; the figures it printed."""
    cmd = [sys.executable, __file__, str(page), str(data), case]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=cap)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)                       # the child, its driver and its browser
        out, err = proc.communicate()
        timed_out = True
    figures = {}
    for line in out.splitlines():
        if line.startswith("{"):
            figures.update(json.loads(line))
    figures["timed_out"] = timed_out
    if proc.returncode not in (0, None) and not timed_out:
        figures["error"] = (err.strip().splitlines() or ["exit %d" % proc.returncode])[-1][:120]
    return figures


def cell(r: dict, key: str, cap: float, fmt="{:.2f} s") -> str:
    if key in r:
        return fmt.format(r[key])
    return f"> {cap:.0f} s" if r.get("timed_out") else "—"


def run_hostile(data_dir: Path, baseline: str, cap: float, bomb_gb: float) -> None:
    old = data_dir / f"viewer_{baseline.replace('/', '_')}.html"
    old.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{baseline}:viewer/render_trajectories.html"],
                                  capture_output=True, text=True, check=True).stdout)
    pages = [("viewer", REPO / "viewer" / "render_trajectories.html"), (f"baseline ({baseline})", old)]
    cases = make_cases(data_dir, bomb_gb)
    rows = []
    for case, data in cases.items():
        for name, page in pages:
            r = run_one(page, data, case, cap)
            print(f"# {case} / {name}: {r}", flush=True)
            rows.append((case, name, r))
    print("\n| case | page | first render | longest task | search \"a\" | tooltip | load until answered | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for case, name, r in rows:
        label = {"small": "small file (floor)", "token": "5 MB token",
                 "bomb": f"{bomb_gb:g} GiB gzip bomb ({cases['bomb'].stat().st_size / 1e6:.1f} MB)"}[case]
        tip = f"{r['tooltip_chars']:,} chars" if "tooltip_chars" in r else "—"
        search = cell(r, "search_s", cap) + (f" ({r['search_count']})" if "search_count" in r else "")
        first = cell(r, "first_render_s", cap) if case != "bomb" else "—"
        task = cell(r, "longest_task_s", cap)
        peak = f"{r['peak_rss_mb'] / 1000:.2f} GB" + (" (when stopped)" if r.get("timed_out") else "") if "peak_rss_mb" in r else "—"
        print(f"| {label} | {name} | {first} | {task} | {search if case == 'token' else '—'} | {tip} | {cell(r, 'load_s', cap)} | {peak} |")
    for case, name, r in rows:
        if case == "bomb" and "message" in r:
            print(f"\n{name}, bomb: {r['message']!r}")


if __name__ == "__main__":
    probe(*sys.argv[1:4])
