"""CLI report cost by model and text length: `python -m inspector report` in fresh processes, all sections.

Cases (the hardening issue's): bundled gpt2-mini and bert-mini, each on a one-sentence text and on a
100 000-character text (the English sample repeated). Each case runs `--repeats` times, interleaved
(gpt2 short, bert short, gpt2 long, bert long, ...) so that load on the shared machine hits all alike;
the table gives the median wall time, the median CPU time of the child process (user + system),
the per-section seconds the report records, and the JSON and HTML sizes.

Printed ratios, measured in this run: bert-mini / gpt2-mini on the sentence (target ≤ 2×), and the
100 000-character text / the sentence for each model (the cost should follow the tokens analysed, which
a context-length cut bounds, not the characters given).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util
import torch

REPO = _util.REPO
SENTENCE = "The cat sat on the mat."
MODELS = ("bundled:gpt2-mini", "bundled:bert-mini")


def long_text(n_chars: int = 100_000) -> str:
    sample = (REPO / "data" / "samples" / "english.txt").read_text(encoding="utf-8").strip()
    return ((sample + "\n\n") * (n_chars // (len(sample) + 2) + 1))[:n_chars]


def run_case(model: str, text_file: Path, tmp: Path) -> dict:
    """One fresh `python -m inspector report` process: wall s, CPU s of the child, section seconds, sizes."""
    out_json, out_html = tmp / "r.json", tmp / "r.html"
    cmd = [sys.executable, "-m", "inspector", "report", "--model", model, "--text-file", str(text_file),
           "--out", str(out_json), "--out", str(out_html), "--overwrite", "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"report failed ({model}, {text_file.name}): {proc.stderr}")
    data = json.loads(out_json.read_text())
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "sections": {k: v["seconds"] for k, v in data["sections"].items()},
            "json_mb": out_json.stat().st_size / 1e6, "html_mb": out_html.stat().st_size / 1e6,
            "tokens": data["sections"].get("overview", {}).get("results", {}).get("overview", {})
                          .get("data", {}).get("n_tokens"),
            "truncation_said": "warning: the text has" in proc.stderr}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run per case")
    ap.add_argument("--threads", type=int, default=None, help="(accepted for run_all.py; the CLI picks its own)")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        texts = {"sentence": tmp / "sentence.txt", "100k chars": tmp / "long.txt"}
        texts["sentence"].write_text(SENTENCE + "\n", encoding="utf-8")
        texts["100k chars"].write_text(long_text() + "\n", encoding="utf-8")
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(repeats):
            for text_name, path in texts.items():
                for model in MODELS:
                    runs.setdefault((model, text_name), []).append(run_case(model, path, tmp))

    print(_util.header("CLI report cost by model and text (bench/bench_report.py)", torch.device("cpu"),
                       f"{repeats} fresh process(es) per case, interleaved; all sections, JSON + HTML"))
    rows, med = [], {}
    for (model, text_name), rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        med[(model, text_name)] = (wall, cpu)
        last = rs[-1]
        top = sorted(last["sections"].items(), key=lambda kv: -kv[1])[:3]
        rows.append([model, text_name, last["tokens"], wall, cpu,
                     ", ".join(f"{k} {v:.1f}" for k, v in top), f"{last['json_mb']:.2f}", f"{last['html_mb']:.2f}",
                     "yes" if last["truncation_said"] else "no"])
    print()
    print(_util.table(["model", "text", "tokens analysed", "wall s", "CPU s", "slowest sections (s)",
                       "JSON MB", "HTML MB", "cut said on stderr"], rows))
    g_s, b_s = med[(MODELS[0], "sentence")], med[(MODELS[1], "sentence")]
    ratio_rows = [
        ["bert-mini / gpt2-mini, one sentence (target ≤ 2×)", b_s[0] / g_s[0], b_s[1] / g_s[1],
         "yes" if b_s[0] / g_s[0] <= 2.0 else "NO"],
    ]
    for model in MODELS:
        s, lg = med[(model, "sentence")], med[(model, "100k chars")]
        ratio_rows.append([f"{model.split(':')[1]}: 100k chars / one sentence", lg[0] / s[0], lg[1] / s[1], ""])
    print()
    print(_util.table(["ratio", "wall", "CPU", "target met"], ratio_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
