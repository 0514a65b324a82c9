"""Real browser: `streamlit run app.py` on a free local port, every page opened in headless Chromium.

Each page must finish rendering (no "Running…" status widget, page title shown, text stable),
show no exception or traceback, and leave a screenshot in test-artifacts/screenshots/.
Skipped only when the chromium / chromedriver binaries (Debian packages) or selenium are absent.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "screenshots"
# (url path, title shown by the page)
PAGES = [("", "Overview"), ("layernorm", "LayerNorm"), ("attention", "Attention"), ("embeddings", "Embeddings"),
         ("token_loss", "Token loss"), ("attribution", "Attribution"), ("analyses", "Layer by layer"),
         ("compare", "Compare"), ("foundations", "Foundations"), ("report", "Report")]
BAD_TEXT = ("Traceback (most recent call last)", "Traceback", "StreamlitAPIException", "ModuleNotFoundError",
            "An error occurred", "NameError", "AttributeError:", "KeyError:")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("streamlit did not answer its health check in time")


@pytest.fixture(scope="module")
def server():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium "
                    "chromium-driver, or run scripts/install_browser.sh)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements-dev.txt)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / "streamlit-server.log", "w")  # the server's output, for debugging a failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def driver(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,2200", "--hide-scrollbars", "--lang=en-US"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _page_state(drv):
    from selenium.webdriver.common.by import By

    running = [e for e in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]') if e.is_displayed()]
    running = running or [e for e in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stSpinner"]')]
    main = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]')
    text = main[0].text if main else ""
    return bool(running), text


def _wait_rendered(drv, title: str, timeout: float = 150) -> str:
    """Until the page title shows, nothing is running, and the main text is unchanged for 1.5 s."""
    deadline = time.monotonic() + timeout
    last, stable_since = None, None
    while time.monotonic() < deadline:
        running, text = _page_state(drv)
        if not running and title in text:
            if text == last:
                if time.monotonic() - stable_since >= 1.5:
                    return text
            else:
                last, stable_since = text, time.monotonic()
        else:
            last, stable_since = None, None
        time.sleep(0.3)
    raise TimeoutError(f"page '{title}' did not finish rendering in {timeout:.0f} s; last text: {(last or '')[:500]}")


@pytest.mark.parametrize("path,title", PAGES, ids=[t for _, t in PAGES])
def test_page_renders_in_a_real_browser(server, driver, path, title):
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.get(f"{server}/{path}")
    try:
        text = _wait_rendered(driver, title)
    finally:
        driver.save_screenshot(str(SHOTS / f"{path or 'overview'}.png"))
    exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, f"{title}: exception shown: {exceptions[0].text[:500]}"
    for bad in BAD_TEXT:
        assert bad not in text, f"{title}: '{bad}' on the page"
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert not errors, f"{title}: error shown: {errors[0].text[:300]}"
    # the shared sidebar is there on every page, with the model picker
    sidebar = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
    assert "Model" in sidebar and "Text to analyse" in sidebar
