"""Eight real browser sessions at once against one server, across every page, each equal to the serial result.

Two `streamlit run app.py` servers on free local ports: on the first, eight headless Chromium browsers (one
thread each, each its own Streamlit session) type eight different texts and open every page through the
sidebar navigation at the same time; on the second, fresh server (empty caches) the same eight tours run one
after another. Each page's main text in a concurrent session must equal the serial one: any result mixed
between sessions, computed on another session's text, or lost (an empty page) shows as a difference.
This replaces an AppTest test whose sessions ran as threads sharing one process-wide runtime object.

Slow (a few minutes on a 2-core machine): `pytest -m slow tests/app/test_concurrent_sessions.py`.
"""
from __future__ import annotations

import contextlib
import difflib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from concurrency_check import PAGES, TEXTS, tour
from test_browser import CHROMEDRIVER, CHROMIUM, REPO, SHOTS, _free_port, _wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@contextlib.contextmanager
def _server(name: str):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open(SHOTS.parent / f"streamlit-{name}.log", "w") as log:
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


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1200", "--lang=en-US", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(120)
    return drv


def _tour_in_own_browser(url: str, text: str) -> dict[str, str]:
    drv = _driver()
    try:
        return tour(drv, url, text)
    except Exception:
        drv.save_screenshot(str(SHOTS / f"concurrent-failure-{TEXTS.index(text)}.png"))
        raise
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def browsers_available():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed")
    pytest.importorskip("selenium")


def test_eight_browser_sessions_across_every_page_equal_the_serial_result(browsers_available):
    assert len(TEXTS) == 8
    with _server("concurrent") as url:
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda t: _tour_in_own_browser(url, t), TEXTS))
    with _server("serial") as url:
        drv = _driver()
        try:
            serial = [tour(drv, url, t) for t in TEXTS]
        finally:
            drv.quit()

    titles = [title for _, title in PAGES]
    # the check can fail: every page was seen, and the texts really reached the pages
    for s in serial:
        assert list(s) == titles and all(s[t].strip() for t in titles)
    assert len({s["Token loss"] for s in serial}) == len(TEXTS), "sessions with different texts looked alike"
    problems = []
    for i, (s, c) in enumerate(zip(serial, concurrent)):
        for title in titles:
            if s[title] != c[title]:
                diff = "\n".join(list(difflib.unified_diff(s[title].splitlines(), c[title].splitlines(),
                                                           "serial", "concurrent", lineterm="", n=0))[:12])
                problems.append(f"session {i} ({TEXTS[i]!r}), page {title}:\n{diff}")
    assert not problems, "\n\n".join(problems[:6])
