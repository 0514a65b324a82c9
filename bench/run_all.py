"""Run every benchmark (`make bench`): capture overhead, corpus scoring, vocabulary geometry, app/CLI times,
and the GPU kernels' compile-time resources.

Each script runs in its own subprocess and prints its tables (Markdown) with date, device and
versions; this script passes --quick / --threads on and fails if any of them fails (the corpus
benchmark asserts that its perplexities agree, the vocabulary one that its neighbours do).
Results recorded so far: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"capture": "bench_capture.py", "corpus": "bench_corpus.py", "vocab": "bench_vocab.py",
           "app": "bench_app.py", "report": "bench_report.py",
           "smollm2": "bench_smollm2_capture.py", "first_page": "bench_first_page.py",
           "kernels": "kernel_resources.py"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes and token counts (a few minutes)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every benchmark")
    ap.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of: " + ",".join(SCRIPTS))
    args = ap.parse_args()
    flags = (["--quick"] if args.quick else [])
    failed = []
    for name in [n for n in args.only.split(",") if n]:
        script = HERE / SCRIPTS[name]
        extra = flags + (["--threads", str(args.threads)] if args.threads else [])
        if name == "first_page" and not args.quick:
            extra.append("--pages")
        t0 = time.perf_counter()
        print(f"\n<!-- {script.name} {' '.join(extra)} -->", flush=True)
        rc = subprocess.call([sys.executable, str(script), *extra], cwd=str(HERE.parent))
        print(f"\n<!-- {script.name}: exit {rc}, {time.perf_counter() - t0:.0f} s -->", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
