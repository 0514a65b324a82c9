"""A newcomer's first impression, in a real browser: seconds from `streamlit run app.py` to real results.

For each default model (INSPECTOR_DEFAULT_MODEL), one run: start a fresh server (empty caches, a fresh
process), open headless Chromium on it as soon as the server answers, and time
- first page: from the server's start until the Overview shows the loaded model's parameter count
  (the model is loaded by then: the figure comes from the loaded weights);
- each further page, opened through the sidebar on the default text, from the click until its main area
  is settled (nothing running, text unchanged for 2 s; the 2 s are subtracted).
Decides issue 16's question "can SmolLM2 be the default": its first page must show within 30 s.

    .venv/bin/python bench/bench_first_page.py [--models bundled:gpt2-mini,bundled:smollm2] [--pages | --quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "app"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util  # noqa: E402
from concurrency_check import PAGES, _open_page, wait_stable  # noqa: E402
from test_browser import CHROMEDRIVER, CHROMIUM, _free_port  # noqa: E402

QUIET = 2.0


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--lang=en-US"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(180)
    return drv


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


def one_model(spec: str, pages: bool) -> dict:
    from selenium.webdriver.common.by import By

    from inspector import models

    from pages._common import format_count

    lm = models.load(spec)  # loaded here only to know what the Overview must show (not timed)
    shown = format_count(lm.describe()["n_parameters"])
    del lm
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", INSPECTOR_DEFAULT_MODEL=spec, TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {"model": spec}
    drv = None
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.perf_counter() - t0 > 180:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        out["server up s"] = time.perf_counter() - t0
        drv = _driver()
        drv.get(url + "/")
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            main = drv.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]')
            text = main[0].text if main else ""
            if f"Parameters\n{shown}" in text:  # the metric computed from the loaded weights
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("the Overview never showed the parameter count")
        out["first page s"] = time.perf_counter() - t0
        if pages:
            for _, title in PAGES[1:]:
                t1 = time.perf_counter()
                _open_page(drv, title)
                wait_stable(drv, title, timeout=900, quiet=QUIET)
                out[title] = time.perf_counter() - t1 - QUIET
    finally:
        if drv is not None:
            drv.quit()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bundled:gpt2-mini,bundled:smollm2")
    ap.add_argument("--pages", action="store_true", help="also time the first visit of every other page")
    ap.add_argument("--quick", action="store_true", help="first page only (the default without --pages)")
    ap.add_argument("--threads", type=int, default=None, help="accepted for bench/run_all.py; the server "
                                                                "uses torch's default")
    args = ap.parse_args()
    args.pages = args.pages and not args.quick
    import torch

    print(_util.header("First impression in a real browser (bench/bench_first_page.py)", torch.device("cpu"),
                       f"headless Chromium, fresh server per model · load average {_util.load_average()}"),
          flush=True)
    rows = [one_model(m, args.pages) for m in args.models.split(",") if m]
    cols = ["model", "server up s", "first page s"] + ([t for _, t in PAGES[1:]] if args.pages else [])
    print(_util.table(cols, [[r.get(c, "-") for c in cols] for r in rows]))
    for r in rows:
        print(f"\n{r['model']}: first page with real results {r['first page s']:.1f} s after the server started "
              f"(target for making it the default: ≤ 30 s: {'yes' if r['first page s'] <= 30 else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
