"""A whole run folder in the viewer, against a baseline page, same run (`bench_viewer.py --run-gb`).

    python benchmarks/bench_viewer.py --run-gb 2 [--step-mb 50] [--baseline main] [--cap 180] [--rss-cap-gb 8]

Generates a run's trajectories/ folder in format version 2 (benchmarks/gen_big_trajectories.py:
--run-gb / --step-mb step files of 4,000-token responses, manifest.jsonl, summary.json), opens
it in headless Debian Chromium through the page's folder input, once with the current page and
once with the baseline page (`git show BASELINE:viewer/render_trajectories.html`, which reads
every file), each in a child process, and measures:
  first trajectory  the folder input's change event to the first paint with tokens on screen
                    (inside the page: window.__viewer.timings);
  all read          until the page says its load is done (the baseline: every file parsed);
  step picked       a click on another step in the steps list until that step's first
                    trajectory is on screen (its title and tokens), measured in the page
                    (polled each frame), for the middle step (20 of 40) and then 8 more steps
                    spread over the run (median and worst);
  memory            the peak of the summed RSS of Chromium's processes (sampled every 50 ms;
                    the Playwright driver is not counted), the peak of their summed PSS (shared
                    pages counted once: what the machine really gives), and an empty page's
                    RSS and PSS in the same browser (the floor), taken before the folder is opened.
A page is stopped at --cap seconds, or when the RSS passes --rss-cap-gb (the machine is shared):
its figures are then "> cap" and the memory "when stopped". The generated folder is deleted at
the end unless --keep-data.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# The steps picked, as places in the steps list: the middle one (step 20 of 40), then 8 more.
PICKS = [0.5, 0.1, 0.77, 0.97, 0.3, 0.65, 0.05, 0.87, 0.42]
# Click a step, then wait (one frame at a time) until its first trajectory is drawn.
PICK = """async (k) => {
    const li = document.querySelector(`#steps li[data-step="${k}"]`), t0 = performance.now();
    li.click();
    for (;;) {
        await new Promise(r => requestAnimationFrame(r));
        const title = document.querySelector('.pane .title');
        if (title && title.textContent.startsWith(`step ${k} `) && document.querySelector('.pane .tok')) break;
        if (performance.now() - t0 > 600000) return -1;
    }
    await new Promise(r => setTimeout(r, 0));
    return performance.now() - t0;
}"""


def say(**figures):
    print(json.dumps(figures), flush=True)            # one line per figure: the parent keeps what came


class Memory:
    """Peaks of the summed RSS (every 50 ms) and PSS (every 0.5 s) of this process's Chromium
    children; past `limit` bytes of RSS it says so and kills its whole process group."""

    def __init__(self, limit):
        import psutil
        self.me, self.limit, self.rss, self.pss, self.now_rss, self.now_pss = psutil.Process(), limit, 0, 0, 0, 0
        threading.Thread(target=self._run, daemon=True).start()

    def _procs(self):
        return [p for p in self.me.children(recursive=True) if "chrom" in p.name()]

    def _run(self):
        k = 0
        while True:
            rss = pss = 0
            for p in self._procs():
                try:
                    rss += p.memory_info().rss
                    if k % 10 == 0:
                        pss += p.memory_full_info().pss
                except Exception:                      # a process that just ended
                    pass
            self.now_rss, self.rss = rss, max(self.rss, rss)
            if k % 10 == 0:
                self.now_pss, self.pss = pss, max(self.pss, pss)
            if rss > self.limit:
                say(stopped=f"RSS passed {self.limit / 1e9:.0f} GB", peak_rss=self.rss, peak_pss=self.pss)
                os.killpg(os.getpgid(0), signal.SIGKILL)
            k += 1
            time.sleep(0.05)


def probe(page_path: str, folder: str, limit: str) -> None:
    """Child process: open `folder` in `page_path`, print each figure as soon as it is known."""
    from playwright.sync_api import sync_playwright
    mem = Memory(float(limit))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(Path(page_path).as_uri())
        time.sleep(3)
        say(floor_rss=mem.now_rss, floor_pss=mem.now_pss)
        page.set_input_files("#dir-input", folder)
        for key in ("firstPaint", "loadEnd"):
            while not page.evaluate(f"() => window.__viewer.timings.{key}"):
                time.sleep(0.05)
                say(peak_rss=mem.rss, peak_pss=mem.pss)
            t = page.evaluate("() => window.__viewer.timings")
            say(**{"first_s" if key == "firstPaint" else "all_s": (t[key] - t["loadStart"]) / 1000}, peak_rss=mem.rss)
        time.sleep(1)
        picks, steps = [], page.eval_on_selector_all("#steps li", "els => els.map(e => Number(e.dataset.step))")
        for k in [steps[min(len(steps) - 1, int(f * len(steps)))] for f in PICKS]:
            picks.append(page.evaluate(PICK, k) / 1000)
            while not page.evaluate("() => window.__viewer.timings.loadEnd"):     # this step fully read
                time.sleep(0.05)
            parsed = page.evaluate("() => window.__viewer.state.parsedOrder ? window.__viewer.state.parsedOrder.length : window.__viewer.state.files.size")
            say(picks=picks, parsed=parsed, peak_rss=mem.rss, peak_pss=mem.pss)
        say(done=True, peak_rss=mem.rss, peak_pss=mem.pss)
        browser.close()


def run_one(page: Path, folder: Path, cap: float, limit: float) -> dict:
    cmd = [sys.executable, __file__, str(page), str(folder), str(limit)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=cap)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)          # the child, its driver and its browser
        out, err = proc.communicate()
        timed_out = True
    try:
        os.killpg(proc.pid, signal.SIGKILL)           # whatever is left of the group
    except ProcessLookupError:
        pass
    figures = {}
    for line in out.splitlines():
        if line.startswith("{"):
            figures.update(json.loads(line))
    figures["timed_out"] = timed_out
    if proc.returncode not in (0, None, -9) and not timed_out and "stopped" not in figures:
        figures["error"] = (err.strip().splitlines() or ["exit %d" % proc.returncode])[-1][:160]
    return figures


def gb(v):
    return f"{v / 1e9:.2f} GB"


def row(name, r, cap):
    stop = r.get("stopped") or (f"stopped at {cap:.0f} s" if r.get("timed_out") else None)
    more = lambda key: f"{r[key]:.2f} s" if key in r else (f"> {cap:.0f} s" if stop else "—")
    picks = r.get("picks") or []
    pick = f"{picks[0]:.2f} s" if picks else more("picks")
    rest = f"{statistics.median(picks[1:]):.2f} / {max(picks[1:]):.2f} s" if len(picks) > 1 else "—"
    memory = f"{gb(r.get('peak_rss', 0))} ({gb(r.get('peak_pss', 0))})" + (" when stopped" if stop else "")
    floor = f"{gb(r.get('floor_rss', 0))} ({gb(r.get('floor_pss', 0))})"
    parsed = str(r.get("parsed", "—"))
    return f"| {name} | {more('first_s')} | {more('all_s')} | {pick} | {rest} | {memory} | {floor} | {parsed} |" + (f" {stop}" if stop else "")


def run_folder_bench(data_dir: Path, run_gb: float, step_mb: int, baseline: str, cap: float, rss_cap_gb: float, keep: bool) -> None:
    sys.path.insert(0, str(HERE))
    from gen_big_trajectories import generate_run
    steps = max(2, round(run_gb * 1000 / step_mb))
    folder = data_dir / f"run_{steps}x{step_mb}mb" / "trajectories"
    if not (folder / "manifest.jsonl").exists():
        t = time.time()
        n = generate_run(folder, steps, step_mb, 4000)
        print(f"# generated {steps} steps x {n} trajectories x 4000 tokens in {time.time() - t:.0f} s", flush=True)
    size = sum(p.stat().st_size for p in folder.iterdir())
    old = data_dir / f"viewer_{baseline.replace('/', '_')}.html"
    old.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{baseline}:viewer/render_trajectories.html"],
                                  capture_output=True, text=True, check=True).stdout)
    rows = []
    try:
        for name, page in [("viewer", REPO / "viewer" / "render_trajectories.html"), (f"baseline ({baseline})", old)]:
            print(f"# load average before {name}: {os.getloadavg()[0]:.1f}", flush=True)
            r = run_one(page, folder, cap, rss_cap_gb * 1e9)
            print(f"# {name}: {r}", flush=True)
            rows.append((name, r))
    finally:
        if not keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"\n{steps} step files, {size / 1e9:.2f} GB ({step_mb} MB each, 4,000-token responses)\n")
    print("| page | first trajectory | all read | middle step picked | 8 more picks (median / worst) | peak memory: RSS (PSS) | empty page: RSS (PSS) | steps parsed at the end |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(row(name, r, cap))


if __name__ == "__main__":
    probe(*sys.argv[1:4])
