"""Browser time of the all-heads grid as the app draws it (12 × 12 heads, 256 tokens, GPT-2-small shape).

Three measurements in headless Chromium, one run, printed as one Markdown table:
- the app's figure (`plots.head_grid_figure`: one raster image + 144 transparent picker squares)
  in a standalone page with plotly.js, from navigation to the second animation frame after plotting;
- the same figure inside a real Streamlit page (`streamlit run` of a two-line page that draws it with
  `st.plotly_chart(on_select=...)`), from navigation until the image is painted in the chart;
- what the issue warns against, for the ratio: 144 full Plotly heat maps (12 × 12 subplots of 256 × 256).
Target (issue 17): under 3 s of browser time for the app's figure.

    .venv/bin/python bench/bench_browser_grid.py [--tokens 256] [--skip-naive]
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_gpt2_tokenizer  # noqa: E402
from inspector import plots  # noqa: E402
from inspector.analyses import heads  # noqa: E402
from inspector.inputs import encode  # noqa: E402
from inspector.models import wrap  # noqa: E402

PAGE = '''import pickle, os
import streamlit as st
st.set_page_config(layout="wide")
fig = pickle.loads(open(os.environ["GRID_FIGURE"], "rb").read())
st.plotly_chart(fig, key="grid", on_select="rerun", selection_mode="points")
'''
WAIT_PLOT = ("const sel = arguments[0], done = arguments[arguments.length - 1], t0 = performance.now();"
             "(function poll() { const gd = document.querySelector('.js-plotly-plot');"
             " const painted = gd && gd._fullLayout && gd.querySelector(sel);"
             " if (painted) { requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now())));"
             " } else if (performance.now() - t0 > 120000) { done(-1); } else { setTimeout(poll, 20); } })();")


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1440,900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    drv.set_script_timeout(180)
    return drv


def _load_ms(drv, url: str, selector: str) -> float:
    """Milliseconds from navigation start to two frames after the plot's `selector` element exists."""
    drv.get(url)
    end = drv.execute_async_script(WAIT_PLOT, selector)
    if end < 0:
        raise TimeoutError(f"the plot never painted at {url}")
    return float(end)  # performance.now() counts from the navigation's time origin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _streamlit_ms(drv, fig, folder: Path) -> float:
    (folder / "page.py").write_text(PAGE)
    (folder / "fig.pkl").write_bytes(pickle.dumps(fig))
    port = _free_port()
    env = dict(os.environ, GRID_FIGURE=str(folder / "fig.pkl"))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(folder / "page.py"), "--server.port",
                             str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        _load_ms(drv, f"http://127.0.0.1:{port}/", "image")  # warm: the server's first script run
        return _load_ms(drv, f"http://127.0.0.1:{port}/", "image")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _naive_figure(grid) -> "plots.go.Figure":
    """144 full heat maps: the thing the raster grid replaces (for the ratio only)."""
    from plotly.subplots import make_subplots

    L, H = grid.n_layers, grid.n_heads
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.005, vertical_spacing=0.005)
    rng = np.random.default_rng(0)
    T = grid.n_tokens
    for layer in range(L):
        for head in range(H):
            z = np.tril(rng.random((T, T)))  # same size as the real patterns; values do not matter here
            fig.add_trace(plots.go.Heatmap(z=z, showscale=False, colorscale="Blues"), row=layer + 1, col=head + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(height=1400, width=1400)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--skip-naive", action="store_true", help="skip the 144-heat-map comparison")
    args = ap.parse_args()
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        print("chromium / chromedriver not installed: nothing measured")
        return
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = make_gpt2_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                       attn_implementation="sdpa")).eval()
    lm = wrap(model, tok)
    words = ("the model reads every token and attends to the ones before it " * 200).split()
    enc = encode(lm, " ".join(words), max_tokens=args.tokens)
    t0 = time.perf_counter()
    grid = heads.head_grid(lm, enc)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    fig = plots.head_grid_figure(grid, highlight_token=grid.n_tokens // 2, selected=(3, 4))
    t_fig = time.perf_counter() - t0
    rows = []
    drv = _driver()
    try:
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            page = folder / "grid.html"
            fig.write_html(page, include_plotlyjs=True, full_html=True)
            rows.append(("app figure, plotly.js page", _load_ms(drv, page.as_uri(), "image"), page.stat().st_size))
            rows.append(("app figure, real Streamlit page", _streamlit_ms(drv, fig, folder), None))
            if not args.skip_naive:
                naive = folder / "naive.html"
                _naive_figure(grid).write_html(naive, include_plotlyjs=True, full_html=True)
                rows.append(("144 Plotly heat maps (avoided)", _load_ms(drv, naive.as_uri(), ".hm"),
                             naive.stat().st_size))
    finally:
        drv.quit()
    print(f"## All-heads grid in the browser ({time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} CPU threads, "
          f"headless Chromium)\n")
    print(f"{grid.n_layers} × {grid.n_heads} heads, {grid.n_tokens} tokens; grid compute {t_grid:.2f} s, "
          f"figure build {t_fig * 1000:.0f} ms.\n")
    print("| what is drawn | browser time (navigation → painted) | page size | × app figure |")
    print("| --- | --- | --- | --- |")
    base = rows[0][1]
    for name, ms, size in rows:
        shown = f"{size / 1e6:.1f} MB" if size else "—"
        print(f"| {name} | {ms / 1000:.2f} s | {shown} | {ms / base:.1f} |")
    print(f"\ntarget: app figure under 3 s → {'met' if max(r[1] for r in rows[:2]) < 3000 else 'NOT met'}")


if __name__ == "__main__":
    main()
