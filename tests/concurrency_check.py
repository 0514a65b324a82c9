"""Concurrency checks shared by the unit test, its soak variant and the real-browser session test.

- `assert_concurrent_equals_serial(lm)`: eight library analyses on one shared model in threads equal the
  serial ones (the library's own guarantee: attention function installed once + a ContextVar sink).
- `tour(driver, url, text)`: one real browser session (its own Streamlit session on the server) types
  `text` into the sidebar and visits every page through the sidebar navigation, returning what each page
  shows. The app test runs eight tours at once against one server and compares each with the same tour
  run alone against a second, fresh server (so no result can come from a cache the concurrent run filled).
  Separate browsers and a real server replace AppTest sessions in threads, which share one process-wide
  runtime object and sometimes came back empty.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from inspector import capture, inputs, service

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention compares queries with keys.",
    "def f(x): return x * 2",
    "Tiếng Việt có dấu.",
    "Emoji 🙂 and CJK 漢字.",
    "Layer normalisation rescales each vector with a learned gain and bias, then shifts it.",
    "numbers like 3.14159 and 2026",
    "A model reads tokens and predicts the next one, again and again and again.",
]


def analyse(lm, text):
    enc = inputs.encode(lm, text)
    with service.device_slot(lm.device):
        res = capture.run(lm, enc.batch())
    return res.attention.std.copy(), res.attention.entropy.copy(), res.logits.numpy().copy()


def assert_concurrent_equals_serial(lm, rounds: int = 3) -> None:
    serial = [analyse(lm, t) for t in TEXTS]
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = [f.result(timeout=60) for f in [pool.submit(analyse, lm, t) for t in TEXTS]]
        for s, g in zip(serial, got):
            for a, b in zip(s, g):
                np.testing.assert_array_equal(a, b)
    assert not capture.is_capturing()


# --------------------------------------------------------------------------- real-browser sessions

# (url path, title) of every page, in sidebar order (the same list as tests/app/test_browser.py)
PAGES = [("", "Overview"), ("layernorm", "LayerNorm"), ("attention", "Attention"), ("embeddings", "Embeddings"),
         ("token_loss", "Token loss"), ("attribution", "Attribution"), ("analyses", "Layer by layer"),
         ("compare", "Compare"), ("foundations", "Foundations"), ("report", "Report")]
# Figures that legitimately differ between two runs of the same request (none expected today; kept explicit)
_VOLATILE = re.compile(r"\b\d+(\.\d+)? ?(s|ms|seconds)\b")


def script_running(drv) -> bool:
    """The page's script run as the Streamlit frontend itself tracks it (the stApp element's
    data-test-script-state: running / rerunRequested / initial until the run ends). On a loaded 2-core machine the
    status widget can stay hidden for seconds while a run is still sending elements, so a quiet period alone
    could read a half-drawn page."""
    from selenium.webdriver.common.by import By

    apps = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    state = apps[0].get_attribute("data-test-script-state") if apps else "initial"
    return state in ("running", "rerunRequested", "initial", None)


def _main_state(drv) -> tuple[bool, str]:
    from selenium.webdriver.common.by import By

    busy = script_running(drv)
    busy = busy or [e for e in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]') if e.is_displayed()]
    busy = busy or drv.find_elements(By.CSS_SELECTOR, '[data-testid="stSpinner"]')
    # an element whose frontend component (a lazily loaded JS chunk, e.g. the button) has not arrived yet is
    # drawn as a skeleton: under load the chunk can take seconds, and the page text then lacks its label
    busy = busy or drv.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stSkeleton"]')
    main = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]')
    titles = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1')
    return bool(busy), (titles[0].text.strip() if titles else ""), (main[0].text if main else "")


def wait_stable(drv, title: str, timeout: float = 300, quiet: float = 2.0) -> str:
    """The main area's text once nothing runs, its title is `title`, and it has not changed for `quiet` s."""
    deadline = time.monotonic() + timeout
    last, since = None, 0.0
    while time.monotonic() < deadline:
        try:
            busy, shown_title, text = _main_state(drv)
        except Exception:  # noqa: BLE001 - an element replaced while being read (StaleElementReference): retry
            time.sleep(0.25)
            continue
        if not busy and shown_title.startswith(title):
            if text == last:
                if time.monotonic() - since >= quiet:
                    return text
            else:
                last, since = text, time.monotonic()
        else:
            last = None
        time.sleep(0.25)
    raise TimeoutError(f"page '{title}' did not settle in {timeout:.0f} s; last text: {(last or '')[:300]}")


def _set_text(drv, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    deadline = time.monotonic() + 180  # under load the sidebar may still be drawing when the title shows
    while True:
        found = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] textarea')
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found, "the sidebar's text area never appeared"
    area = found[0]
    area.click()
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    area.send_keys(text)
    area.send_keys(Keys.CONTROL, Keys.ENTER)  # Streamlit applies a text area on Ctrl+Enter
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and area.get_attribute("value") != text:
        time.sleep(0.2)


def _open_page(drv, title: str) -> None:
    """Click the page's link in the sidebar navigation: the same session (and its sidebar text) goes on."""
    from selenium.webdriver.common.by import By

    links = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
    for link in links:
        if link.text.strip().splitlines()[-1:] == [title]:  # the link text is "<icon name>\n<title>"
            link.click()
            return
    raise AssertionError(f"no sidebar link to '{title}' among {[a.text for a in links]}")


def tour(drv, url: str, text: str) -> dict[str, str]:
    """One browser session: type `text` into the sidebar, then open every page; {title: main text shown}."""
    drv.get(url + "/")
    wait_stable(drv, "Overview")
    _set_text(drv, text)
    out = {}
    for _, title in PAGES:
        _open_page(drv, title)
        shown = wait_stable(drv, title)
        out[title] = _VOLATILE.sub("<time>", shown)
    return out
