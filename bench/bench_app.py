"""App and CLI response times on the bundled default model (the targets of the app, attribution and report issues).

- Every page of the app, run headless with Streamlit's AppTest on the bundled default model and
  the default English sample: first visit (computes) and second visit (cached results), seconds.
  Targets: a second visit draws in under 0.5 s; the Attribution page shows results within a few
  seconds on a 2-core CPU.
- `python -m inspector report` of the default model on the English sample, all sections, HTML +
  JSON, as a user runs it (a fresh process, model load included). Target: under a minute.

Timings are wall-clock on whatever machine runs this; compare them only within one run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402

REPO = _util.REPO
PAGES = ["overview", "layernorm", "attention", "embeddings", "token_loss", "attribution", "analyses", "compare",
         "foundations", "report"]


def _navigation_mode() -> None:
    """AppTest resets Streamlit's pages/ folder flag before each run; a real server clears it for good
    once app.py calls st.navigation. Do what the server does (same fix as tests/app/test_pages.py)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    class NavigationPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    app_test.PagesManager = NavigationPagesManager


def page_times() -> list[list]:
    from streamlit.testing.v1 import AppTest

    _navigation_mode()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    t0 = time.perf_counter()
    at.run()
    opening = time.perf_counter() - t0
    rows = []
    first = {}
    for page in PAGES:
        t0 = time.perf_counter()
        at.switch_page(f"pages/{page}.py").run()
        first[page] = time.perf_counter() - t0
        problems = [e.value for e in [*at.exception, *at.error]]
        if problems:
            raise SystemExit(f"{page}: {problems}")
    for page in PAGES:
        t0 = time.perf_counter()
        at.switch_page(f"pages/{page}.py").run()
        second = time.perf_counter() - t0
        rows.append([page, first[page], second, "yes" if second < 0.5 else "NO"])
    rows.insert(0, ["(app opens, model load)", opening, float("nan"), ""])
    return rows


def cli_report_seconds() -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "inspector", "report", "--text-file", str(REPO / "data" / "samples" / "english.txt"),
               "--out", f"{tmp}/report.html", "--out", f"{tmp}/report.json", "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"CLI report failed: {proc.stderr}")
        size = Path(f"{tmp}/report.html").stat().st_size
    return seconds, f"{size / 1024:.0f} KiB HTML"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="accepted for run_all.py; the same run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the app run")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(_util.header("App and CLI response times (bench/bench_app.py)", torch.device("cpu"),
                       f"bundled:gpt2-mini, data/samples/english.txt · load average {_util.load_average()}"),
          flush=True)
    seconds, what = cli_report_seconds()
    print("\nCLI: python -m inspector report (all sections, HTML + JSON, fresh process)\n")
    print(_util.table(["command", "seconds", "output", "< 60 s"],
                      [["report bundled:gpt2-mini english.txt", seconds, what, "yes" if seconds < 60 else "NO"]]))
    rows = page_times()
    print("\nApp pages (AppTest, one session): first visit computes, second visit is served from the caches\n")
    print(_util.table(["page", "first visit s", "second visit s", "second < 0.5 s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
