"""The golden report: every figure of the JSON report of the default model on the default text.

`python tests/golden/golden_report.py` rewrites `gpt2-mini-english.json.gz` from the current code.
Do that only when a change of figures is intended (and say so in the commit message); the test
`tests/golden/test_golden_report.py` compares the current report with it number by number.

Built with one torch thread: float32 reductions are summed in a different order with more threads,
which moves the last bits of a few embedding figures (seen: ~2e-7 relative). Another machine or library
build moves them too (seen: up to ~5e-5 relative, ~1e-6 absolute on cancellations); the test's tolerances
say what is accepted.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("gpt2-mini-english.json.gz")
MODEL = "bundled:gpt2-mini"
TEXT_FILE = REPO / "data" / "samples" / "english.txt"
# Run-dependent fields: when and how fast the report was built, on which versions, from which folder.
IGNORED_KEYS = frozenset({"created_utc", "seconds", "versions", "resolved_path"})


def build_json() -> dict:
    """The current code's JSON report of the default model and text (one torch thread)."""
    import torch

    from inspector import models
    from inspector import report as R

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = models.load(MODEL)
        text = TEXT_FILE.read_text(encoding="utf-8").strip()
        rep = R.build_report(lm, text, strict=True)
        return json.loads(R.to_json(rep))
    finally:
        torch.set_num_threads(threads)


def normalise(obj):
    """Drop run-dependent keys; paths inside this checkout become '<repo>/...'."""
    if isinstance(obj, dict):
        return {k: normalise(v) for k, v in obj.items() if k not in IGNORED_KEYS}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(str(REPO)):
        return "<repo>" + obj[len(str(REPO)):]
    return obj


def load_golden() -> dict:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as f:
        return json.load(f)


def main() -> int:
    doc = normalise(build_json())
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(doc, f, ensure_ascii=False, indent=0, sort_keys=True)
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
