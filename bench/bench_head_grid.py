"""All-heads grid on a GPT-2-small-shaped model (12 × 12 heads, 256 tokens): compute, encode, browser time.

Prints one Markdown table: forward passes + downsampling, PNG encoding, the image's size, and the
time headless Chromium needs to load, decode and paint the page holding it (when chromium and
chromedriver are installed). Target (issue: exploration): under 3 s of browser time.

    .venv/bin/python bench/bench_head_grid.py [--tokens 256]
"""
from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import make_gpt2_tokenizer  # noqa: E402
from inspector.analyses import heads  # noqa: E402
from inspector.inputs import encode  # noqa: E402
from inspector.models import wrap  # noqa: E402


def _browser_ms(html: Path) -> float | None:
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1440,900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        t0 = time.perf_counter()
        drv.get(html.as_uri())
        drv.execute_async_script(
            "const done = arguments[0]; const img = document.getElementById('grid');"
            "img.decode().then(() => requestAnimationFrame(() => requestAnimationFrame(() => done(1))));")
        return (time.perf_counter() - t0) * 1000
    finally:
        drv.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
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
    png = heads.png_bytes(heads.head_grid_rgb(grid, highlight_token=grid.n_tokens // 2))
    t_png = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "grid.html"
        page.write_text('<html><body><img id="grid" src="data:image/png;base64,'
                        + base64.b64encode(png).decode() + '"></body></html>')
        browser = _browser_ms(page)
    print(f"## All-heads grid ({time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} CPU threads)\n")
    print("| shape | tokens | grid (forward + downsample) | PNG encode | PNG size | browser load + paint |")
    print("| --- | --- | --- | --- | --- | --- |")
    shown = f"{browser:.0f} ms" if browser is not None else "not measured (no chromium)"
    print(f"| 12 × 12 heads, d 768 | {grid.n_tokens} | {t_grid:.2f} s | {t_png * 1000:.0f} ms | "
          f"{len(png) / 1024:.0f} KiB | {shown} |")


if __name__ == "__main__":
    main()
