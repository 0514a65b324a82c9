"""Capture overhead: inspector's instrumented forward vs a plain SDPA forward vs the naive "keep everything" way.

Variants, all on the same random-init weights and the same batch (no padding):
- plain      the wrapped model called outside any capture block: pure SDPA (inspector's attention
             function with no collector active is transformers' `sdpa_attention_forward`).
- stats      `capture.run(lm, batch, CaptureOptions(logits=False))`: QKᵀ statistics of every layer × head.
- inspector  `capture.run` with what the app's attention page shows for one text: statistics of every
             layer × head, the logits (copied to the CPU in float32) and the full probabilities of one
             layer for the pattern view. (The page also runs one plain forward for its fidelity figure.)
- naive      a second copy of the model loaded with attn_implementation="eager", called with
             output_attentions=True and output_hidden_states=True; afterwards the same statistics are
             computed from what it returned. Eager returns post-softmax probabilities only, so the
             pre-softmax logits QKᵀ are recomputed from the kept hidden states with the model's own
             modules (GPT-2: ln_1 → c_attn; BERT: self.query / self.key), one full (B, H, T, T) tensor
             per layer. Entropy and max-probability come from the returned probabilities.

Timing: medians over interleaved repeats in one process (ratios are robust to a noisy machine).
Memory: peak growth of one call, each variant in a fresh subprocess on CPU (see bench/_util.py).
GPU (when torch.cuda.is_available()): bf16, 1×1024 and 8×1024. CPU: fp32, 1×256 and 4×256.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402

from inspector import capture  # noqa: E402
from inspector.models import wrap  # noqa: E402

FAMILIES = ("gpt2", "bert")
VARIANTS = ("plain", "stats", "inspector", "naive")
STAT_NAMES = ("count", "mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob")


def settings(quick: bool):
    if torch.cuda.is_available():
        device, dtype = torch.device("cuda"), torch.bfloat16
        shapes = [(1, 256), (2, 256)] if quick else [(1, 1024), (8, 1024)]
    else:
        device, dtype = torch.device("cpu"), torch.float32
        shapes = [(1, 128), (2, 128)] if quick else [(1, 256), (4, 256)]
    return device, dtype, shapes


def build(family: str, attn: str, device, dtype, max_len: int):
    """GPT-2-small / BERT-base shaped model, random init with a fixed seed (same weights every call)."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=max(1024, max_len),
                         attn_implementation=attn)
        model = GPT2LMHeadModel(cfg)
    else:
        # BERT-base has 512 positions; the table is extended only when a longer batch is benchmarked.
        cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=max(512, max_len), attn_implementation=attn)
        model = BertForMaskedLM(cfg)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def make_batch(family: str, B: int, T: int, vocab: int, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "bert":
        batch["token_type_ids"] = torch.zeros_like(ids)
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------- the naive way


def _qk(model, family: str, layer: int, hidden: torch.Tensor, H: int):
    """Query and key of one layer recomputed from its input hidden state: (B, H, T, d) each."""
    B, T, D = hidden.shape
    if family == "gpt2":
        block = model.transformer.h[layer]
        q, k, _ = block.attn.c_attn(block.ln_1(hidden)).split(D, dim=2)
    else:
        sa = model.bert.encoder.layer[layer].attention.self
        q, k = sa.query(hidden), sa.key(hidden)
    shape = (B, T, H, D // H)
    return q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2)


@torch.no_grad()
def naive_run(model, family: str, batch: dict) -> tuple[torch.Tensor, dict[str, np.ndarray], np.ndarray]:
    """Eager forward keeping every attention map and hidden state; statistics computed afterwards."""
    kwargs = dict(batch, output_attentions=True, output_hidden_states=True)
    if family == "gpt2":
        kwargs["use_cache"] = False
    out = model(**kwargs)
    H = model.config.num_attention_heads
    mask = batch["attention_mask"].bool()
    causal = family == "gpt2"
    per_layer = {k: [] for k in STAT_NAMES}
    for layer, probs in enumerate(out.attentions):
        q, k = _qk(model, family, layer, out.hidden_states[layer], H)
        scores = q.float() @ k.float().transpose(-1, -2)  # (B, H, T, T) unscaled q·k
        T = scores.shape[-1]
        valid = mask[:, None, :, None] & mask[:, None, None, :]
        if causal:
            valid = valid & torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
        valid = valid.expand_as(scores)
        n = valid.sum(dim=(0, 2, 3)).double()
        s = scores.double()
        mean = torch.where(valid, s, 0.0).sum(dim=(0, 2, 3)) / n
        var = torch.where(valid, (s - mean[None, :, None, None]) ** 2, 0.0).sum(dim=(0, 2, 3)) / n
        p = probs.double()
        ent = torch.special.entr(p).sum(-1)  # (B, H, T)
        rows = valid.any(-1)
        n_keys = valid.sum(-1)
        multi = n_keys >= 2
        frac = ent / torch.log(n_keys.clamp(min=2).double())
        for name, val in (("count", n), ("mean", mean), ("std", var.sqrt()),
                          ("min", scores.masked_fill(~valid, math.inf).amin(dim=(0, 2, 3))),
                          ("max", scores.masked_fill(~valid, -math.inf).amax(dim=(0, 2, 3))),
                          ("entropy", (ent * rows).sum(dim=(0, 2)) / rows.sum(dim=(0, 2))),
                          ("entropy_fraction", (frac * multi).sum(dim=(0, 2)) / multi.sum(dim=(0, 2))),
                          ("max_prob", (p.amax(-1) * rows).sum(dim=(0, 2)) / rows.sum(dim=(0, 2)))):
            per_layer[name].append(val.double().cpu().numpy())
        del scores, s, valid
    stats = {k: np.stack(v) for k, v in per_layer.items()}
    last_probs = out.attentions[-1].float().cpu().numpy()
    return out.logits.float().cpu(), stats, last_probs


# --------------------------------------------------------------------------- variants


def variant_fns(family: str, lm, eager, batch) -> dict:
    L = lm.n_layers
    extra = {"use_cache": False} if family == "gpt2" else {}

    def plain():
        with torch.no_grad():
            return lm.model(**batch, **extra).logits

    fns = {
        "plain": plain,
        "stats": lambda: capture.run(lm, batch, capture.CaptureOptions(logits=False)),
        "inspector": lambda: capture.run(lm, batch, capture.CaptureOptions(keep_probs_layers=(L - 1,))),
    }
    if eager is not None:
        fns["naive"] = lambda: naive_run(eager, family, batch)
    return fns


def agreement(family, lm, eager, batch) -> dict[str, float]:
    """Max relative difference of every statistic, naive vs inspector, and max |Δlogits| vs plain."""
    res = capture.run(lm, batch, capture.CaptureOptions(keep_probs_layers=(lm.n_layers - 1,)))
    plain = variant_fns(family, lm, None, batch)["plain"]().float().cpu()
    logits_n, stats_n, probs_n = naive_run(eager, family, batch)
    out = {"inspector vs plain logits max|Δ|": float((res.logits - plain).abs().max()),
           "naive vs plain logits max|Δ|": float((logits_n - plain).abs().max())}
    worst = 0.0
    for name in STAT_NAMES:  # max |Δ| relative to the statistic's largest magnitude over layers × heads
        a = np.asarray(getattr(res.attention, name), dtype=np.float64)
        b = stats_n[name]
        worst = max(worst, float(np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), 1e-30)))
    out["naive vs inspector statistics max |Δ|/max|x|"] = worst
    out["last-layer probs max|Δ|"] = float(np.abs(res.kept[lm.n_layers - 1].probs - probs_n).max())
    return out


# --------------------------------------------------------------------------- one attention call


def attention_call_table(device, dtype, quick: bool, repeats: int) -> list[list]:
    """One attention call of GPT-2-small shape (12 heads × 64): SDPA alone vs SDPA + the collector's statistics."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class _Layer(torch.nn.Module):
        layer_idx, is_causal = 0, True

    module = _Layer()
    if device.type == "cuda":
        shapes = [(1, 256), (2, 256)] if quick else [(1, 1024), (8, 1024)]
    else:
        shapes = [(1, 128), (2, 128)] if quick else [(1, 256), (4, 256), (1, 1024)]
    rows = []
    for B, T in shapes:
        g = torch.Generator().manual_seed(2)
        q, k, v = (torch.randn(B, 12, T, 64, generator=g).to(device, dtype) for _ in range(3))

        def sdpa():
            return sdpa_attention_forward(module, q, k, v, None, scaling=0.125, is_causal=True)

        def with_stats():
            collector = capture._Collector(1, 12, capture.CaptureOptions(), None)
            token = capture._active_collector.set(collector)
            try:
                return capture._inspector_attention(module, q, k, v, None, scaling=0.125, is_causal=True)
            finally:
                capture._active_collector.reset(token)

        med = _util.interleaved_medians({"sdpa": sdpa, "stats": with_stats}, device, max(repeats, 5))
        rows.append([f"{B}×{T}", med["sdpa"] * 1e3, med["stats"] * 1e3, med["stats"] / med["sdpa"],
                     (med["stats"] - med["sdpa"]) * 1e3 * 12])
    return rows


# --------------------------------------------------------------------------- worker (one memory figure)


def worker(family: str, variant: str, B: int, T: int, quick: bool, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    device, dtype, _ = settings(quick)
    attn = "eager" if variant == "naive" else "sdpa"
    model = build(family, attn, device, dtype, T)
    lm = wrap(model, None) if variant != "naive" else None
    tiny = make_batch(family, 1, 8, model.config.vocab_size, device)
    batch = make_batch(family, B, T, model.config.vocab_size, device)
    if lm is None:
        fn, fn_tiny = (lambda: naive_run(model, family, batch)), (lambda: naive_run(model, family, tiny))
    else:
        fn, fn_tiny = variant_fns(family, lm, None, batch)[variant], variant_fns(family, lm, None, tiny)[variant]
    fn_tiny()  # load kernels, thread pools, first-call allocations
    with _util.PeakMemory(device) as mem:
        result = fn()
        del result
    _util.emit({"peak_mb": mem.peak_mb, "method": mem.method})


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (median reported)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--worker", nargs=4, metavar=("FAMILY", "VARIANT", "B", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fam, var, B, T = args.worker
        worker(fam, var, int(B), int(T), args.quick, args.threads)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    worker_flags = (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])

    device, dtype, shapes = settings(args.quick)
    repeats = args.repeats or (3 if args.quick else 5)
    families = [f for f in args.families.split(",") if f]
    dtype_name = str(dtype).replace("torch.", "")
    print(_util.header("Capture overhead (bench/bench_capture.py)", device,
                       f"dtype {dtype_name} · random-init GPT-2-small (12×768, 12 heads, V 50 257) and BERT-base "
                       f"(12×768, 12 heads, V 30 522) · median of {repeats} interleaved repeats · "
                       f"load average {_util.load_average()}"), flush=True)
    call_rows = attention_call_table(device, dtype, args.quick, repeats)
    time_rows, mem_rows, check_rows = [], [], []
    mem_method = ""
    for family in families:
        max_len = max(T for _, T in shapes)
        lm = wrap(build(family, "sdpa", device, dtype, max_len), None)
        eager = build(family, "eager", device, dtype, max_len)
        assert all(torch.equal(a, b) for a, b in zip(lm.model.parameters(), eager.parameters())), "weights differ"
        for B, T in shapes:
            batch = make_batch(family, B, T, lm.vocab_size, device)
            fns = variant_fns(family, lm, eager, batch)
            med = _util.interleaved_medians(fns, device, repeats)
            p = med["plain"]
            time_rows.append([family, f"{B}×{T}", p * 1e3, med["stats"] * 1e3, med["inspector"] * 1e3,
                              med["naive"] * 1e3, med["stats"] / p, med["inspector"] / p, med["naive"] / p,
                              med["naive"] / med["inspector"]])
            agree = agreement(family, lm, eager, batch)
            check_rows.append([family, f"{B}×{T}"] + [f"{v:.1e}" for v in agree.values()])
            check_headers = list(agree)
            print(f"  timed {family} {B}×{T}: plain {p * 1e3:.0f} ms, inspector ×{med['inspector'] / p:.2f}, "
                  f"naive ×{med['naive'] / p:.2f}", file=sys.stderr, flush=True)
        del lm, eager
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not args.no_memory:
            for B, T in shapes:
                peaks = {}
                for variant in VARIANTS:
                    res = _util.run_worker(Path(__file__), [family, variant, str(B), str(T), *worker_flags])
                    peaks[variant] = res["peak_mb"]
                    mem_method = res["method"]
                mem_rows.append([family, f"{B}×{T}", peaks["plain"], peaks["stats"], peaks["inspector"],
                                 peaks["naive"], peaks["inspector"] / peaks["plain"], peaks["naive"] / peaks["plain"],
                                 peaks["naive"] / peaks["inspector"]])

    print("\nOne attention call, 12 heads × 64 (ms): SDPA alone vs SDPA + statistics (inspector's attention "
          "function with a collector active)\n")
    print(_util.table(["B×T", "sdpa", "sdpa + stats", "ratio", "added per 12-layer forward (ms)"], call_rows))
    print("\nWall time per forward (ms) and ratios to the plain SDPA forward\n")
    print(_util.table(["model", "B×T", "plain", "stats", "inspector", "naive", "stats/plain", "inspector/plain",
                       "naive/plain", "naive/inspector"], time_rows))
    if mem_rows:
        print(f"\nPeak memory growth of one forward (MiB; {mem_method}; fresh process per variant)\n")
        print(_util.table(["model", "B×T", "plain", "stats", "inspector", "naive", "inspector/plain",
                           "naive/plain", "naive/inspector"], mem_rows))
    print("\nAgreement (same weights, same batch)\n")
    print(_util.table(["model", "B×T"] + check_headers, check_rows))


if __name__ == "__main__":
    main()
