"""Real-browser test of the workbench: ``engram-interp app`` serves tiny checkpoints, headless
Debian Chromium opens every page, waits until Streamlit has finished rendering, checks that no
error or traceback is on the page, and saves a screenshot (to a temporary folder, or to
``$ENGRAM_INTERP_SCREENSHOTS``: that is how ``docs/screenshots/`` is made).

Chromium is driven through ``chromedriver`` (Debian ``chromium-driver``) with a few W3C WebDriver
HTTP calls (no selenium needed). Skips cleanly when ``/usr/bin/chromium`` or the driver is absent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Screenshots go to a temporary folder; refresh the ones in docs/ with
#   ENGRAM_INTERP_SCREENSHOTS=docs/screenshots python -m pytest tests/test_app_browser.py
SHOTS_ENV = "ENGRAM_INTERP_SCREENSHOTS"
#   ... and ENGRAM_INTERP_SCREENSHOTS_BUNDLED=1 serves the bundled checkpoints instead of tiny random ones
BUNDLED_ENV = "ENGRAM_INTERP_SCREENSHOTS_BUNDLED"
#   ... and ENGRAM_INTERP_SCREENSHOTS_CACHE=DIR keeps the app's result cache there (a rerun draws at once)
CACHE_ENV = "ENGRAM_INTERP_SCREENSHOTS_CACHE"
# (url path, file name, text that must be on the finished page)
PAGES = [
    ("LogitLens", "logit_lens.png", "Bars: 95% interval"),
    ("CKA", "cka.png", "can only lie between"),
    ("Gates", "gates.png", "Selectivity over"),
    ("Ablation", "ablation.png", "Retained = 100 x ablated"),
    ("Probe", "probe.png", "Predict the token after"),
    ("Memory", "memory.png", "Memory map"),
    ("Attribution", "attribution.png", "Activation patching"),
    ("Locate", "locate.png", "Causal tracing over row groups"),
    ("Routing", "routing.png", "One seed"),
    ("", "overview.png", "Verdicts on the bundled set"),  # last: the findings computed by the other pages are shown
]
BUNDLED_ONLY = ("Attribution", "Locate")  # their default targets are single tokens of the bundled tokenizer only
ERROR_JS = """
const q = (s) => document.querySelectorAll(s).length;
return {
  running: q('[data-testid="stStatusWidgetRunningIcon"]') + q('[data-testid="stSpinner"]')
           + q('[data-testid="stProgress"]') + q('[data-testid="stSkeleton"]'),
  exceptions: q('[data-testid="stException"]'),
  deploy: q('[data-testid="stAppDeployButton"]'),
  errors: Array.from(document.querySelectorAll('[data-testid="stAlertContentError"]')).map(e => e.innerText),
  h1: Array.from(document.querySelectorAll('h1')).map(e => e.innerText),
  text: document.body ? document.body.innerText : "",
};
"""

# Under CI (``CI=true``, where scripts/test.sh installs Debian chromium) a missing browser is a
# failure, not a skip: the browser tests must run there.
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not IN_CI and not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(not IN_CI and not Path(DRIVER).exists(),
                       reason="chromedriver not found (apt-get install chromium-driver)"),
]


def test_browser_present_under_ci():
    """Under CI the browser and its driver are installed (so the tests below cannot silently skip)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} missing: scripts/test.sh installs chromium under CI"
    assert Path(DRIVER).exists(), f"{DRIVER} missing: scripts/test.sh installs chromium-driver under CI"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Browser:
    """Just enough W3C WebDriver: navigate, run a script, take a screenshot."""

    def __init__(self, driver_url: str, profile: Path):
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": str(CHROMIUM),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1800"]}}}}
        self.base = f"{driver_url}/session/{_http('POST', f'{driver_url}/session', caps)['value']['sessionId']}"

    def get(self, url: str) -> None:
        _http("POST", f"{self.base}/url", {"url": url})

    def script(self, js: str):
        return _http("POST", f"{self.base}/execute/sync", {"script": js, "args": []})["value"]

    def find(self, css: str) -> str:
        """The WebDriver id of the first element matching ``css``."""
        found = _http("POST", f"{self.base}/element", {"using": "css selector", "value": css})["value"]
        return next(iter(found.values()))

    def type_into(self, css: str, text: str) -> None:
        """Replace the text of the element matching ``css`` by ``text`` and commit it (Ctrl+Enter)."""
        el = self.find(css)
        _http("POST", f"{self.base}/element/{el}/clear", {})
        _http("POST", f"{self.base}/element/{el}/value", {"text": text + "\uE009\uE007\uE000"})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(_http("GET", f"{self.base}/screenshot")["value"]))

    def full_page(self, path: Path, width: int = 1400) -> None:
        """A screenshot of the whole page at ``width`` px: the window is made as tall as Streamlit's
        scrolling main area, so figures and tables far down the page are in the picture too."""
        height = self.script("const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
                             "return Math.min(12000, Math.max(1800, m.scrollHeight + 120));")
        _http("POST", f"{self.base}/window/rect", {"width": width, "height": int(height)})
        time.sleep(1.0)  # plotly redraws at the new size
        self.screenshot(path)
        _http("POST", f"{self.base}/window/rect", {"width": width, "height": 1800})

    def quit(self) -> None:
        try:
            _http("DELETE", self.base, timeout=10)
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``engram-interp app`` (the real CLI) on a free port, serving tiny checkpoints and probes."""
    import engram_interp as ei
    from engram_interp.testing import tiny_model

    d = tmp_path_factory.mktemp("browser")
    if os.environ.get(BUNDLED_ENV):  # docs/screenshots/: the bundled set, its probes and held-out corpus
        yield from _serve(d, [ROOT / "checkpoints" / f"{k}.ckpt" for k in ("engram", "moe", "engram-null")],
                          ROOT / "probes", ROOT / "probes" / "texts" / "heldout.txt")
        return
    paths = [ei.save(tiny_model(kind), d / f"{kind}.ckpt", provenance={"val_loss": 5.0}) for kind in ("engram", "moe", "engram-null")]
    probes = d / "probes"
    probes.mkdir()
    (probes / "facts.jsonl").write_text('{"prompt": "The capital of France is", "answer": " Paris"}\n')
    (probes / "entities_ner.jsonl").write_text(
        '{"text": "Alexander the Great was a king of Macedon. The Milky Way is a galaxy.", '
        '"entity_end_positions": [18, 40, 55]}\n'
        '{"text": "By the way, the Princess of Wales visited London and Paris.", '
        '"entity_end_positions": [32, 47, 57]}\n')
    from engram_interp.testing import _TEXT

    corpus = d / "corpus.txt"  # the library's corpus for LogitLens KL curves and gate tables
    corpus.write_text("\n\n".join([_TEXT] * 6))
    yield from _serve(d, paths, probes, corpus)


def _serve(d: Path, paths: list, probes: Path, corpus: Path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), ENGRAM_INTERP_CORPUS=str(corpus))
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engram_interp.cli", "app", *map(str, paths), "--port", str(port),
         "--cache-dir", os.environ.get(CACHE_ENV) or str(d / "cache"), "--probes", str(probes)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://localhost:{port}/_stcore/health", 60)
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert "Local URL: http://localhost:" in (d / "server.log").read_text()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    port = _free_port()
    driver = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/status", 20)
        b = Browser(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("chromium-profile"))
        yield b
        b.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=10)


SETTLE_S = float(os.environ.get("ENGRAM_INTERP_BROWSER_TIMEOUT", "90"))  # a busy machine needs more


def _settle(browser: Browser, marker: str, timeout: float = SETTLE_S) -> dict:
    """Poll until the marker text is shown and nothing has been running for three polls in a row."""
    deadline, quiet, state = time.time() + timeout, 0, {}
    while time.time() < deadline:
        state = browser.script(ERROR_JS)
        if state["exceptions"] or state["errors"]:
            return state
        quiet = quiet + 1 if (not state["running"] and state["h1"] and marker in state["text"]) else 0
        if quiet >= 3:
            return state
        time.sleep(0.5)
    raise AssertionError(f"page did not finish rendering ('{marker}' not shown): {state.get('text', '')[:500]}")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return Path(os.environ[SHOTS_ENV]).resolve() if os.environ.get(SHOTS_ENV) else tmp_path_factory.mktemp("screenshots")


@pytest.mark.parametrize("path,shot,marker", PAGES, ids=[p[1][:-4] for p in PAGES])
def test_page_renders_without_errors(server, browser, shots, path, shot, marker):
    if path in BUNDLED_ONLY and not os.environ.get(BUNDLED_ENV):
        pytest.skip(f"{path}'s default prompts (' States') are several tokens for the tiny test tokenizer")
    browser.get(f"{server}/{path}")
    state = _settle(browser, marker)
    assert not state["exceptions"], state["text"][:2000]
    assert not state["errors"], state["errors"]
    assert "Traceback" not in state["text"]
    assert state["h1"], "no page title rendered"
    assert not state["deploy"] and "Deploy" not in state["text"], "Streamlit's Deploy button is shown"
    time.sleep(1.0)  # let plotly finish drawing before the picture
    shots.mkdir(parents=True, exist_ok=True)
    browser.full_page(shots / shot)
    assert (shots / shot).stat().st_size > 10_000


PROBE_TEXT = ("The Milky Way is a galaxy, and Alexander the Great was a king of Macedon who crossed the river "
              "with his army in the spring")
PROBE_JS = """
const slider = Array.from(document.querySelectorAll('[data-testid="stSlider"]'))
  .find(e => e.innerText.includes('Predict the token after'));
const thumb = slider ? slider.querySelector('[data-testid="stSliderThumbValue"]') : null;
const pos = Array.from(document.querySelectorAll('[data-testid="stMarkdownContainer"]'))
  .map(e => e.innerText).find(t => t.startsWith('Predicting the token after position'));
return {thumb: thumb ? thumb.innerText : null, pos: pos || null};
"""


def test_probe_follows_a_changed_text(server, browser):
    """Issue 9.2: after a longer text is typed, the page predicts at the position the slider shows,
    and a new text starts at its last token (not at the position the old text left in the widget)."""
    import re

    browser.get(f"{server}/Probe")
    _settle(browser, "Predict the token after")
    before = browser.script(PROBE_JS)
    assert before["thumb"] and before["pos"], before
    browser.type_into("textarea", PROBE_TEXT)
    deadline, shown, state = time.time() + 60, before, {}
    while time.time() < deadline and (shown["pos"] or "") .split(";")[0] == before["pos"].split(";")[0]:
        time.sleep(0.5)
        state = _settle(browser, "Predict the token after")
        shown = browser.script(PROBE_JS)
    assert not state.get("exceptions") and not state.get("errors"), state
    assert shown["pos"] != before["pos"], "the page did not rerun on the new text"
    slider_pos = int(shown["thumb"].split(":")[0])
    page_pos, n_tokens = map(int, re.match(r"Predicting the token after position (\d+) .* of (\d+) tokens",
                                           shown["pos"]).groups())
    assert page_pos == slider_pos, shown
    assert slider_pos == n_tokens - 1, shown  # a new text starts at its last token
