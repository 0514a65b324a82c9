"""Real browser, hostile and careful-user checks: no request leaves the app's own server; user input is never
interpreted as Markdown / LaTeX / links / HTML.

Reuses the Chromium harness of test_browser.py (a `streamlit run app.py` on a free local port). The requests
are read from Chrome's performance log (DevTools `Network.requestWillBeSent` events, every request the page
makes: documents, scripts, fonts, icons, websockets).
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest
from inspector.escaping import WORD_JOINER
from test_browser import CHROMEDRIVER, CHROMIUM, PAGES, SHOTS, _wait_rendered, server  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}
# a model name no loader accepts (too many slashes for a hub id), quoted back verbatim in the error
HOSTILE = ("**bold** _em_ [link](http://example.com/x) $x^2$ <b>tag</b> `code` :material/home: ~~gone~~ "
           "www.example.org me@example.com")


@pytest.fixture(scope="module")
def logged_driver(server):  # noqa: F811 - the fixture imported above
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1400", "--hide-scrollbars", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _requested_urls(drv) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = msg["params"]
            url = params.get("request", {}).get("url") or params.get("url")
            if url:
                urls.append(url)
    return urls


def _outside(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in LOCAL_SCHEMES:
        return False
    return (parsed.hostname or "") not in LOCAL_HOSTS


def test_no_request_leaves_the_apps_own_server(server, logged_driver):  # noqa: F811
    """Every page, loaded fresh: all requests go to the local server (no icon, font or metrics host)."""
    drv = logged_driver
    drv.get_log("performance")  # start from an empty log
    seen: list[str] = []
    for path, title in PAGES:
        drv.get(f"{server}/{path}")
        _wait_rendered(drv, title)
        time.sleep(1.0)  # late requests (favicon, fonts) after the text is stable
        seen += _requested_urls(drv)
    assert len(seen) > 20, "the performance log recorded almost nothing: the check would prove nothing"
    assert any(urlparse(u).hostname in LOCAL_HOSTS and "/_stcore/stream" in u for u in seen), "no websocket seen"
    outside = sorted({u for u in seen if _outside(u)})
    assert not outside, f"requests outside the app's own server: {outside[:10]}"
    icon = drv.execute_script("var l = document.querySelector(\"link[rel='shortcut icon']\"); return l && l.href;")
    assert icon and (icon.startswith("data:") or urlparse(icon).hostname in LOCAL_HOSTS), icon


def _choose_other_model(drv, spec: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sidebar = drv.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]')
    box = sidebar.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"]')[0]
    box.click()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        options = [o for o in drv.find_elements(By.CSS_SELECTOR, '[role="option"]') if "Other:" in o.text]
        if options:
            options[0].click()
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the model picker offers no 'Other' entry")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        inputs = sidebar.find_elements(By.CSS_SELECTOR, '[data-testid="stTextInput"] input')
        if inputs:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("no model-name field appeared after choosing 'Other'")
    field = inputs[0]
    field.click()
    field.send_keys(spec)
    field.send_keys(Keys.ENTER)


def test_user_input_is_quoted_literally(server, logged_driver):  # noqa: F811
    """A model name full of Markdown, LaTeX, a link and HTML comes back in the error exactly as typed."""
    from selenium.webdriver.common.by import By

    drv = logged_driver
    drv.get(f"{server}/")
    _wait_rendered(drv, "Overview")
    _choose_other_model(drv, HOSTILE)
    deadline, alerts = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        alerts = [a for a in drv.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
                  if "is neither a hub id" in a.text]
        if alerts:
            break
        time.sleep(0.3)
    SHOTS.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(SHOTS / "hostile-model-name.png"))
    assert alerts, "no error about the hostile model name was shown"
    alert = alerts[0]
    shown = alert.text.replace(WORD_JOINER, "")  # the invisible joiner that keeps :material/home: from an icon
    assert HOSTILE in shown, f"not shown literally: {alert.text!r}"
    inner = alert.get_attribute("innerHTML")
    for tag in ("<strong", "<em", "<a ", "<code", "<b>", "katex", "<h1", "<del", "<s>", "material-symbols",
                "stIconMaterial"):
        assert tag not in inner, f"user input interpreted ({tag}): {inner[:600]}"
