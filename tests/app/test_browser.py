"""Real browser: `streamlit run app.py` on a free local port, every page opened in headless Chromium.

Each page must finish rendering (no "Running…" status widget, page title shown, text stable),
show no exception or traceback, and leave screenshots in test-artifacts/screenshots/: `<page>.png`
at 1440 × 900 (what a user sees first) and `<page>-full.png` (the window made tall enough for the
whole page). `test_click_a_head_cell_and_a_token_drills_down` clicks a layer × head cell and a
pattern cell with real mouse events and checks that the chosen head and token are shown.
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
PAGES = [("", "Overview"), ("layernorm", "LayerNorm"), ("attention", "Attention"), ("heads", "All heads"),
         ("embeddings", "Embeddings"),
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
                "--window-size=1440,900", "--hide-scrollbars", "--lang=en-US"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _screenshots(drv, name: str) -> None:
    """`name`.png at 1440 × 900, then `name`-full.png with the window as tall as the page's content."""
    drv.set_window_size(1440, 900)
    drv.save_screenshot(str(SHOTS / f"{name}.png"))
    height = drv.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]');"
        "const c = m && m.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        "return c ? c.scrollHeight + 120 : document.body.scrollHeight;")
    drv.set_window_size(1440, min(max(int(height or 900), 900), 12000))
    time.sleep(0.8)
    drv.save_screenshot(str(SHOTS / f"{name}-full.png"))
    drv.set_window_size(1440, 900)


def _page_state(drv):
    from selenium.webdriver.common.by import By

    from concurrency_check import script_running

    running = script_running(drv)
    running = running or [e for e in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
                          if e.is_displayed()]
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
        _screenshots(driver, path or "overview")
    exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, f"{title}: exception shown: {exceptions[0].text[:500]}"
    for bad in BAD_TEXT:
        assert bad not in text, f"{title}: '{bad}' on the page"
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert not errors, f"{title}: error shown: {errors[0].text[:300]}"
    # the shared sidebar is there on every page, with the model picker
    sidebar = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
    assert "Model" in sidebar and "Text to analyse" in sidebar


def _click_data_point(drv, st_key: str, x: float, y: float, axis: str = "") -> None:
    """A real mouse click at data coordinates (x, y) of the Plotly chart drawn with key `st_key`."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    plot = drv.find_element(By.CSS_SELECTOR, f".st-key-{st_key} .js-plotly-plot")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot)
    time.sleep(0.8)
    px, py = drv.execute_script(
        "const gd = arguments[0], L = gd._fullLayout, xa = L['xaxis' + arguments[3]], ya = L['yaxis' + arguments[3]];"
        "const r = gd.getBoundingClientRect();"
        "return [r.left + xa._offset + xa.l2p(arguments[1]), r.top + ya._offset + ya.l2p(arguments[2])];",
        plot, x, y, axis)
    actions = ActionBuilder(drv)
    actions.pointer_action.move_to_location(int(px), int(py))
    actions.pointer_action.click()
    actions.perform()


def _wait_for(drv, title: str, needle: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _wait_rendered(drv, title, timeout=timeout)
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"'{needle}' never appeared; page text: {text[:800]}")


def test_click_a_head_cell_and_a_token_drills_down(server, driver):
    """Click layer × head cell (layer 0, head 3) on the σ heat map, then a pattern cell of query 5."""
    from inspector import models
    from inspector.analyses import attention, heads
    from inspector.inputs import encode

    spec = "bundled:gpt2-mini"
    lm = models.load(spec)
    text = (REPO / "data" / "samples" / "python_docs.txt").read_text(encoding="utf-8").strip()
    rep = attention.attention_logit_report(lm, encode(lm, text))
    default = heads.most_peaked_head(rep.entropy_fraction)
    target = (0, 3) if default != (0, 3) else (1, 2)

    driver.get(f"{server}/attention")
    page = _wait_rendered(driver, "Attention")
    assert f"Layer {default[0]}, head {default[1]}:" in page  # the pattern view opens on the most peaked head
    _click_data_point(driver, "attn_sigma", target[1], target[0])
    page = _wait_for(driver, "Attention", f"Layer {target[0]}, head {target[1]}:")
    assert f"attention row in layer {target[0]}, head {target[1]}" in page

    enc = encode(lm, text)
    query = 5 if enc.tokens[5].strip() else 6
    _click_data_point(driver, "attn_pattern", 0, query)
    page = _wait_for(driver, "Attention", f"Token {query}:")
    assert f"Where token {query} looks" in page
    assert "Top predictions" in page and "Prediction per layer" in page
    _screenshots(driver, "attention-drilldown")


def test_all_heads_grid_click_opens_the_head_and_marks_the_token(server, driver):
    """The all-heads image: a click on thumbnail (layer 1, head 2) opens that head; a pattern click picks a token."""
    from inspector import models
    from inspector.inputs import encode

    lm = models.load("bundled:gpt2-mini")
    text = (REPO / "data" / "samples" / "python_docs.txt").read_text(encoding="utf-8").strip()
    enc = encode(lm, text)
    cell, gap = min(48, enc.n_tokens), 2  # the page draws 48-pixel thumbnails with 2-pixel gaps
    centre = gap + cell / 2
    driver.get(f"{server}/heads")
    _wait_rendered(driver, "All heads")
    _click_data_point(driver, "grid_pick", centre + 2 * (cell + gap), centre + 1 * (cell + gap))
    page = _wait_for(driver, "All heads", "Layer 1, head 2:")
    query = 7 if enc.tokens[7].strip() else 8
    _click_data_point(driver, "grid_pattern", 0, query)
    page = _wait_for(driver, "All heads", f"Token {query}:")
    assert "attention row in layer 1, head 2" in page
    _screenshots(driver, "heads-drilldown")


def test_second_text_side_by_side_in_a_real_browser(server, driver):
    """Switch on "Second text (B)" in the sidebar, type a minimal pair, and read Token loss: B's perplexity
    (plain transformers) and the B − A strip are drawn; the screenshot shows the layout at 1440 × 900."""
    import math

    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from inspector import models

    lm = models.load("bundled:gpt2-mini")
    text_b = "The key to the cabinet is on the table."
    ids = lm.tokenizer(text_b)["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    ce = -torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    ppl_b = math.exp(float(ce.mean()))

    driver.get(f"{server}/token_loss")
    _wait_rendered(driver, "Token loss")
    toggle = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] .st-key-text_b_on label')
    toggle.click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not driver.find_elements(By.CSS_SELECTOR, ".st-key-text_b textarea"):
        time.sleep(0.3)
    area = driver.find_element(By.CSS_SELECTOR, ".st-key-text_b textarea")
    area.click()
    area.send_keys(text_b)
    area.send_keys(Keys.CONTROL, Keys.ENTER)  # Streamlit applies a text area on Ctrl+Enter
    page = _wait_for(driver, "Token loss", "Text B beside A")
    assert "Perplexity: B" in page
    shown = page.split("Perplexity: B", 1)[1].split()[0]
    assert float(shown) == pytest.approx(ppl_b, rel=1e-3)
    strips = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-token]')
    assert strips, "no token strip drawn"
    _screenshots(driver, "token-loss-text-b")
