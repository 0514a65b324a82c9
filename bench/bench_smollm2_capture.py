"""Capture overhead on the real SmolLM2-135M (bundled:smollm2, fp32, CPU): plain SDPA vs inspector's capture.

Variants on the same loaded model and the same batch (rows of 512 tokens of data/samples text, no padding):
- plain      the wrapped model called outside any capture block (pure SDPA, use_cache off).
- stats      capture.run(..., CaptureOptions(logits=False)): QKᵀ statistics of every layer × head.
- inspector  capture.run with what the attention page asks for one text: statistics, logits, the full
             probabilities of the last layer.
Shapes 1×512 and 4×512. Time: medians of interleaved repeats in one process. Memory: peak growth of one
call, each variant in a fresh subprocess (RSS high-water mark, see bench/_util.py). Also checks that the
capture's logits are bit-identical to plain.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402

from inspector import capture, models  # noqa: E402

SHAPES = ((1, 512), (4, 512))
VARIANTS = ("plain", "stats", "inspector")


def make_batch(lm, B: int, T: int) -> dict:
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted((_util.REPO / "data" / "samples").glob("*.txt"))
                    if p.name != "README.md")
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    while len(ids) < B * T:
        ids = ids + ids
    x = torch.tensor(ids[:B * T]).view(B, T)
    return {"input_ids": x, "attention_mask": torch.ones_like(x)}


def variant_fns(lm, batch) -> dict:
    def plain():
        with torch.no_grad():
            return lm.model(**batch, use_cache=False).logits

    return {"plain": plain,
            "stats": lambda: capture.run(lm, batch, capture.CaptureOptions(logits=False)),
            "inspector": lambda: capture.run(lm, batch, capture.CaptureOptions(keep_probs_layers=(lm.n_layers - 1,)))}


def worker(variant: str, B: int, T: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    lm = models.load("bundled:smollm2")
    variant_fns(lm, make_batch(lm, 1, 8))[variant]()  # first-call allocations, thread pools
    fn = variant_fns(lm, make_batch(lm, B, T))[variant]
    with _util.PeakMemory(lm.device) as mem:
        result = fn()
        del result
    _util.emit({"peak_mb": mem.peak_mb, "method": mem.method})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one repeat per variant (make bench --quick)")
    ap.add_argument("--worker", nargs=3, metavar=("VARIANT", "B", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]), args.threads)
        return 0
    if args.quick:
        args.repeats = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = models.load("bundled:smollm2")
    print(_util.header("Capture overhead on SmolLM2-135M (bench/bench_smollm2_capture.py)", lm.device,
                       f"bundled:smollm2 (dequantised Q4_1, fp32, 30 layers × 9 heads / 3 KV heads) · median of "
                       f"{args.repeats} interleaved repeats · load average {_util.load_average()}"), flush=True)
    time_rows, mem_rows, identical = [], [], []
    for B, T in SHAPES:
        batch = make_batch(lm, B, T)
        fns = variant_fns(lm, batch)
        med = _util.interleaved_medians(fns, lm.device, args.repeats)
        p = med["plain"]
        time_rows.append([f"{B}×{T}", p, med["stats"], med["inspector"], med["stats"] / p, med["inspector"] / p])
        same = torch.equal(fns["inspector"]().logits, fns["plain"]().float())
        identical.append(f"{B}×{T}: {'yes' if same else 'NO'}")
        if not args.no_memory:
            extra = ["--threads", str(args.threads)] if args.threads else []
            peaks = {v: _util.run_worker(Path(__file__), [v, str(B), str(T), *extra]) for v in VARIANTS}
            pm = peaks["plain"]["peak_mb"]
            mem_rows.append([f"{B}×{T}", pm, peaks["stats"]["peak_mb"], peaks["inspector"]["peak_mb"],
                             peaks["stats"]["peak_mb"] / pm, peaks["inspector"]["peak_mb"] / pm])
            method = peaks["plain"]["method"]
    print("\nTime (seconds per forward)\n")
    print(_util.table(["batch", "plain s", "stats s", "inspector s", "stats / plain", "inspector / plain"],
                      time_rows))
    if mem_rows:
        print(f"\nPeak memory growth of one call (MiB; {method})\n")
        print(_util.table(["batch", "plain", "stats", "inspector", "stats / plain", "inspector / plain"], mem_rows))
    print(f"\ncapture logits bit-identical to plain: {', '.join(identical)}")
    return 0 if all(s.endswith("yes") for s in identical) else 1


if __name__ == "__main__":
    sys.exit(main())
