"""Browser fixtures for the viewer tests: one Chromium per session, a fresh page per test.

Debian's `chromium` is driven by Playwright for Python (Playwright's own browser download does not
work offline). The tests skip only when no `chromium` is on PATH, and fail instead when
OPENRLHF_EXT_REQUIRE_BROWSER=1 (set by .ci/run, which installs it with apt).
"""
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

VIEWER = Path(__file__).resolve().parents[2] / "viewer" / "render_trajectories.html"
# ../shared beside the checkout; for a git worktree one level further up (beside the main checkout).
_ROOT = Path(__file__).resolve().parents[2]
SHARED = next((d for d in (_ROOT.parent / "shared", _ROOT.parent.parent / "shared") if d.is_dir()), _ROOT.parent / "shared")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    exe = shutil.which("chromium")
    if not exe:
        # CI (.ci/run) installs chromium and sets this: there a missing browser is a failure.
        if os.environ.get("OPENRLHF_EXT_REQUIRE_BROWSER") == "1":
            pytest.fail("OPENRLHF_EXT_REQUIRE_BROWSER=1 but chromium is not on PATH")
        pytest.skip("Debian's chromium is not on PATH (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright   # a test dependency: missing it is an error, not a skip
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def wait_loaded(page, timeout_s=15):
    """Until the viewer's latest load (files picked, a step opened) has drawn everything.
    Polled from here: wait_for_function would eval() a string, which the page's CSP forbids."""
    for _ in range(int(timeout_s * 40)):
        if page.evaluate("() => window.__viewer.timings.loadEnd > (window.__lastLoad || 0)"):
            break
        page.wait_for_timeout(25)
    else:
        raise TimeoutError("the viewer did not finish loading")
    page.evaluate("() => { window.__lastLoad = window.__viewer.timings.loadEnd; }")


def _with_load(page):
    def load(*paths, selector="#file-input", wait=True, timeout_s=15):
        page.set_input_files(selector, [str(p) for p in paths])
        if wait:
            wait_loaded(page, timeout_s)
    page.load = load
    page.wait_loaded = lambda timeout_s=15: wait_loaded(page, timeout_s)
    return page


@pytest.fixture
def viewer(page):
    """The viewer opened from its file; `viewer.load(*paths)` picks files through the real input."""
    page.goto(VIEWER.as_uri())
    yield _with_load(page)
    assert page.errors == [], page.errors     # no uncaught exception in the page, whatever the test did


@pytest.fixture(scope="session")
def viewer_url():
    """The viewer served over http://127.0.0.1 (a secure context with an origin of its own, which
    the origin-private file system needs; a file:// page has none)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(VIEWER.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{VIEWER.name}"
    server.shutdown()


@pytest.fixture
def served_viewer(page, viewer_url):
    page.goto(viewer_url)
    yield _with_load(page)
    assert page.errors == [], page.errors
