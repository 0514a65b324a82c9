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

`--cuda-suite` (GPU only, one command, a few minutes): plain SDPA vs the torch statistics path
(INSPECTOR_FUSED_STATS=off) vs the fused Triton path (=on) vs eager with output_attentions=True, for
GPT-2-small and BERT-base at 1×1024, 8×1024, 8×512 and a SmolLM2-135M-shaped Llama at 8×1024, bf16,
random init; time and torch.cuda.max_memory_allocated ratios to plain, logits bit-identity, and the
agreement of the fused statistics with the torch path.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402
import kernel_resources  # noqa: E402

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


class _Layer(torch.nn.Module):
    """What inspector's attention function reads from the attention module of layer 0."""
    layer_idx, is_causal = 0, True

    def __init__(self, kv_groups: int = 1):
        super().__init__()
        self.num_key_value_groups = kv_groups  # what transformers' SDPA wrapper repeats the key heads by


def _call_with_stats(module, q, k, v, scale: float):
    """One causal attention call through inspector's attention function with a collector active (the
    statistics path the INSPECTOR_FUSED_STATS mode selects)."""
    collector = capture._Collector(1, q.shape[1], capture.CaptureOptions(), None)
    token = capture._active_collector.set(collector)
    try:
        return capture._inspector_attention(module, q, k, v, None, scaling=scale, is_causal=True)
    finally:
        capture._active_collector.reset(token)


def attention_call_table(device, dtype, quick: bool, repeats: int) -> list[list]:
    """One attention call of GPT-2-small shape (12 heads × 64): SDPA alone vs SDPA + the collector's statistics."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

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

        med = _util.interleaved_medians({"sdpa": sdpa, "stats": lambda: _call_with_stats(module, q, k, v, 0.125)},
                                        device, max(repeats, 5))
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


# --------------------------------------------------------------------------- CUDA suite (fused kernel)


SUITE = [("gpt2", 1, 1024), ("gpt2", 8, 1024), ("gpt2", 8, 512),
         ("bert", 1, 1024), ("bert", 8, 1024), ("bert", 8, 512), ("smollm2", 8, 1024)]
SUITE_STATS = STAT_NAMES + ("sink_mass",)


def build_smollm2(attn: str, device, dtype):
    """SmolLM2-135M's shape (30 layers, 576 wide, 9 heads / 3 KV heads, MLP 1536, V 49 152), random init."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rope_theta=100000.0, tie_word_embeddings=True, attn_implementation=attn)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def _suite_lm(model, family: str, device):
    from inspector.errors import UnsupportedArchitectureError

    try:
        return wrap(model, None)
    except UnsupportedArchitectureError:  # an architecture wrap() does not know yet: what capture.run needs, by hand
        cfg = model.config
        return types.SimpleNamespace(model=model, device=device, family=family, n_layers=cfg.num_hidden_layers,
                                     n_heads=cfg.num_attention_heads, vocab_size=cfg.vocab_size)


def _with_mode(mode: str, fn):
    def call():
        old = os.environ.get("INSPECTOR_FUSED_STATS")
        os.environ["INSPECTOR_FUSED_STATS"] = mode
        try:
            return fn()
        finally:
            if old is None:
                os.environ.pop("INSPECTOR_FUSED_STATS", None)
            else:
                os.environ["INSPECTOR_FUSED_STATS"] = old
    return call


KERNEL_TILES = [None] + [tuple(t) for t in kernel_resources.ALTERNATIVE_TILES]


def kernel_tile_table(device, dtype, repeats: int, smoke: bool) -> list[list]:
    """One attention call alone: SDPA, SDPA + the torch statistics path, and the two fused kernels alone
    (per-tile partials + float64 merge) for several tile choices (None = `fused_stats._tiles`' default);
    each fused choice's accumulator is checked against the default's. For picking tiles on a new GPU."""
    import torch.nn.functional as F

    from inspector import fused_stats

    shapes = [("GPT-2-small", 2, 16, 12, 12, 64), ("SmolLM2 (GQA 9/3)", 2, 16, 9, 3, 64)] if smoke else \
        [("GPT-2-small", 8, 1024, 12, 12, 64), ("SmolLM2 (GQA 9/3)", 8, 1024, 9, 3, 64),
         ("GPT-2-small", 1, 1024, 12, 12, 64)]
    rows = []
    for name, B, T, H, Hkv, d in shapes:
        g = torch.Generator().manual_seed(3)
        q = torch.randn(B, H, T, d, generator=g).to(device, dtype)
        k, v = (torch.randn(B, Hkv, T, d, generator=g).to(device, dtype) for _ in range(2))
        scale = 1 / math.sqrt(d)
        module = _Layer(H // Hkv)

        def sdpa():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=Hkv != H)

        def torch_stats():
            return _call_with_stats(module, q, k, v, scale)

        accs = {}

        def fused(tiles):
            acc = accs.setdefault(tiles, capture._Accumulator(H, device))
            block, warps = tiles if tiles else (None, None)

            def call():
                parts = fused_stats.fused_head_partials(q, k, scale=scale, causal=True, block=block, warps=warps)
                fused_stats.merge_partials_fused(acc, scale, parts)
            return call

        fns = {"sdpa": sdpa, "sdpa + torch stats": _with_mode("off", torch_stats)}
        fns.update({f"fused {t}": fused(t) for t in KERNEL_TILES})
        med = _util.interleaved_medians(fns, device, repeats)
        ref = accs[None]
        for tiles in KERNEL_TILES:
            acc = accs[tiles]
            worst = max(float(((getattr(acc, f) / acc.n.clamp(min=1)) - (getattr(ref, f) / ref.n.clamp(min=1))).abs().max()
                              / max(float((getattr(ref, f) / ref.n.clamp(min=1)).abs().max()), 1e-30))
                        for f in ("mean", "m2", "ent_sum", "maxp_sum", "sink_sum"))
            bm, bn, w = fused_stats._tiles(d, device, dtype) if tiles is None else (*tiles[0], tiles[1])
            rows.append([name, f"{B}×{T}", f"{bm}×{bn}, {w} warps" + (" (default)" if tiles is None else ""),
                         med["sdpa"] * 1e3, med["sdpa + torch stats"] * 1e3, med[f"fused {tiles}"] * 1e3,
                         med[f"fused {tiles}"] / med["sdpa"], f"{worst:.1e}"])
    return rows


def cuda_suite(repeats: int, smoke: bool = False) -> None:
    """The GPU suite. `smoke`: the same code on CPU fp32 at tiny lengths under TRITON_INTERPRET=1, to check
    that it runs (its figures measure nothing)."""
    from inspector import fused_stats

    if smoke:
        if not fused_stats._interpreting():
            raise SystemExit("--suite-smoke needs TRITON_INTERPRET=1 in the environment")
        device, dtype, suite = torch.device("cpu"), torch.float32, [(f, 2, 16) for f in ("gpt2", "bert", "smollm2")]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda-suite needs a CUDA GPU (torch.cuda.is_available() is False)")
        device, dtype, suite = torch.device("cuda"), torch.bfloat16, SUITE
        torch.backends.cuda.matmul.allow_tf32 = False  # the torch path's fp32 QKᵀ stays exact
    title = "SMOKE RUN on CPU (not a measurement)" if smoke else "Fused attention statistics on CUDA"
    print(_util.header(f"{title} (bench/bench_capture.py --cuda-suite)", device,
                       f"{str(dtype).replace('torch.', '')} · random init · median of {repeats} interleaved repeats · "
                       f"triton {getattr(fused_stats.triton, '__version__', 'missing')}"), flush=True)
    tile_rows = kernel_tile_table(device, dtype, max(repeats, 10) if not smoke else 1, smoke)
    print("\nOne attention call (ms, causal, no padding): SDPA alone, SDPA + the torch statistics path, and the "
          "fused statistics kernels alone per tile choice; last column: the largest relative difference of its "
          "per-head figures from the default tiles'\n")
    print(_util.table(["shape", "B×T", "tiles", "sdpa", "sdpa + torch stats", "fused kernels", "fused / sdpa",
                       "vs default"], tile_rows), flush=True)
    time_rows, mem_rows, check_rows = [], [], []
    built: dict[str, tuple] = {}
    for family, B, T in suite:
        if family not in built:
            built.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if family == "smollm2":
                sdpa, eager = build_smollm2("sdpa", device, dtype), build_smollm2("eager", device, dtype)
            else:
                sdpa, eager = build(family, "sdpa", device, dtype, 1024), build(family, "eager", device, dtype, 1024)
            built[family] = (_suite_lm(sdpa, family, device), eager)
        lm, eager = built[family]
        batch = make_batch(family, B, T, lm.model.config.vocab_size, device)
        extra = {"use_cache": False} if family in ("gpt2", "smollm2") else {}
        stats_opts = capture.CaptureOptions(logits=False)

        def plain():
            with torch.no_grad():
                return lm.model(**batch, **extra).logits

        def naive():
            with torch.no_grad():
                return eager(**batch, **extra, output_attentions=True).logits

        fns = {"plain": plain,
               "torch stats": _with_mode("off", lambda: capture.run(lm, batch, stats_opts)),
               "fused stats": _with_mode("on", lambda: capture.run(lm, batch, stats_opts)),
               "eager + attentions": naive}
        med = _util.interleaved_medians(fns, device, repeats)
        peaks = {}
        for name, fn in fns.items():
            with _util.PeakMemory(device) as mem:
                out = fn()
                del out
            peaks[name], mem_method = mem.peak_mb, mem.method
        p, pm = med["plain"], peaks["plain"]
        shape = f"{B}×{T}"
        time_rows.append([family, shape, p * 1e3] + [med[n] * 1e3 for n in list(fns)[1:]]
                         + [med[n] / p for n in list(fns)[1:]])
        mem_rows.append([family, shape, pm] + [peaks[n] for n in list(fns)[1:]]
                        + [peaks[n] / pm if pm > 0 else math.nan for n in list(fns)[1:]])

        ref = plain().float().cpu()
        on = _with_mode("on", lambda: capture.run(lm, batch))()
        off = _with_mode("off", lambda: capture.run(lm, batch))()
        worst = {"elementwise": ("", 0.0), "scaled": ("", 0.0)}  # max |Δ|/|x| and max |Δ| / max |x| per statistic
        for name in SUITE_STATS:
            a = np.asarray(getattr(on.attention, name), dtype=np.float64)
            b = np.asarray(getattr(off.attention, name), dtype=np.float64)
            top = max(float(np.nanmax(np.abs(b))), 1e-30)
            rels = {"elementwise": float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))),
                    "scaled": float(np.nanmax(np.abs(a - b)) / top)}
            for kind, rel in rels.items():
                if rel > worst[kind][1]:
                    worst[kind] = (name, rel)
        check_rows.append([family, shape, "yes" if torch.equal(on.logits, ref) else "NO",
                           "yes" if torch.equal(off.logits, ref) else "NO"]
                          + [f"{worst[k][1]:.1e} ({worst[k][0] or '–'})" for k in ("elementwise", "scaled")]
                          + ["yes" if worst["scaled"][1] <= 1e-3 else "NO"])
        print(f"  {family} {shape}: plain {p * 1e3:.1f} ms, fused ×{med['fused stats'] / p:.2f}, "
              f"torch ×{med['torch stats'] / p:.2f}", file=sys.stderr, flush=True)
        del on, off, ref
    names = ["torch stats", "fused stats", "eager + attentions"]
    print("\nWall time per forward (ms) and ratios to the plain SDPA forward\n")
    print(_util.table(["model", "B×T", "plain"] + names + [f"{n}/plain" for n in names], time_rows))
    print(f"\nPeak memory growth of one forward (MiB, {mem_method}, same process) and ratios\n")
    print(_util.table(["model", "B×T", "plain"] + names + [f"{n}/plain" for n in names], mem_rows))
    print("\nChecks: logits bit-identical to plain SDPA; fused vs torch statistics (worst statistic over "
          "layers × heads: max |Δ|/|x|, and max |Δ| / max |x|)\n")
    print(_util.table(["model", "B×T", "fused logits ≡ plain", "torch logits ≡ plain", "max |Δ|/|x|",
                       "max |Δ|/max |x|", "≤ 1e-3"], check_rows))


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (median reported)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--cuda-suite", action="store_true",
                    help="GPU only: plain vs torch statistics vs fused Triton statistics vs eager (see module doc)")
    ap.add_argument("--suite-smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=4, metavar=("FAMILY", "VARIANT", "B", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fam, var, B, T = args.worker
        worker(fam, var, int(B), int(T), args.quick, args.threads)
        return
    if args.cuda_suite or args.suite_smoke:
        cuda_suite(args.repeats or (1 if args.suite_smoke else 5), smoke=args.suite_smoke)
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
