"""Takes docs/viewer.png: the main view on a realistic run (several steps, GRPO groups).

    python tests/viewer/screenshot.py [--dark] [--heatmap] [--out docs/viewer.png]

Not a test: the README's picture. The responses are written math reasoning, tokenised by a rough
word-piece regex; forking words ("Wait", "So", "Alternatively", ...) get high entropy.
"""
import argparse
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.viewer.records import make_record, mark_step, write_json  # noqa: E402

PROMPTS = [
    ("A train travels 180 km in 2.5 hours. What is its average speed in km/h?", [
        "The average speed is distance divided by time.\nSo 180 / 2.5 = 72.\nThe answer is 72 km/h.",
        "Let me compute 180 / 2.5.\nWait, 2.5 * 70 = 175, and 2.5 * 2 = 5, so 2.5 * 72 = 180.\nTherefore the speed is 72 km/h.",
        "Speed = 180 / 2.5.\nHmm, maybe I should convert: 2.5 hours is 150 minutes, so 180 km in 150 minutes is 1.2 km per minute.\nSo 1.2 * 60 = 72.\nThe answer is 72.",
        "We divide: 180 / 2.5 = 7.2.\nActually that is wrong, 180 / 2.5 = 72.\nThe average speed is 72 km/h.",
    ]),
    ("Is 91 a prime number? Answer yes or no.", [
        "91 is odd, and it is not divisible by 3 or 5.\nBut 7 * 13 = 91.\nSo 91 is not prime. The answer is no.",
        "Let me check small primes.\n91 / 7 = 13.\nTherefore 91 = 7 * 13, and the answer is no.",
        "91 is not even, so maybe it is prime.\nAlternatively, check 7: 7 * 13 = 91.\nSo no, it is not prime.",
        "The answer is yes, 91 is prime.\nWait, 7 * 13 = 91, so it is not.\nThe answer is no.",
    ]),
]
FORKS = {"Wait", "So", "But", "Alternatively", "Hmm", "maybe", "Actually", "Let", "Therefore", "check", "wrong", "not"}


def tokens(text):
    return re.findall(r" ?[A-Za-z]+| ?\d|[^\w\s]| |\n", text)


def step_records(step, rnd):
    recs, idx = [], 0
    for g, (prompt, answers) in enumerate(PROMPTS):
        for a in answers:
            resp = []
            for t in tokens(a):
                base = rnd.random() ** 3 * 0.6
                if t.strip() in FORKS:
                    base += 1.4 + rnd.random() * 1.2 - step * 0.02
                elif t.strip().isdigit() and rnd.random() < 0.3:
                    base += 0.8 + rnd.random()
                e = round(max(0.0, base), 4)
                resp.append((t, e, round(-e * 0.45 - 0.003, 4)))
            ok = rnd.random() < 0.3 + step / 100          # rewards rise over training
            recs.append(make_record(step, idx, tokens(prompt + "\n"), resp, group_index=g, reward=1.0 if ok else 0.0,
                                    advantages=round(rnd.uniform(-1, 1), 3), ret=round(rnd.uniform(-1, 1), 3),
                                    info={"kl": round(rnd.random() * 0.01, 4), "truncated": False}))
            idx += 1
    mark_step(recs, 0.2)
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dark", action="store_true")
    ap.add_argument("--heatmap", action="store_true", help="Heatmap mode, one response")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "viewer.png"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rnd = random.Random(7)
    files = [write_json(tmp / f"trajectories_step_{s}.json", step_records(s, rnd)) for s in (10, 20, 30, 40, 50)]
    viewer = Path(__file__).resolve().parents[2] / "viewer" / "render_trajectories.html"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        ctx = b.new_context(viewport={"width": 1440, "height": 860}, color_scheme="dark" if a.dark else "light",
                            device_scale_factor=1)
        page = ctx.new_page()
        page.goto(viewer.as_uri() + "#step=30&traj=1")
        page.set_input_files("#file-input", [str(f) for f in files])
        page.wait_for_selector(".pane .tok")
        if a.heatmap:
            page.click("[data-mode=heatmap]")
        else:
            page.check("[data-toggle=compare]")
        page.hover(".pane >> nth=" + ("0" if a.heatmap else "1") + " >> .tok.hi >> nth=0")
        page.wait_for_timeout(300)
        page.screenshot(path=a.out)
        b.close()
    print(a.out)


if __name__ == "__main__":
    main()
