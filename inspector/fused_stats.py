"""Attention-logit statistics of every head from two Triton kernels (flash-attention style), on CUDA.

The torch path in `capture._Collector` materialises float32 chunks of q·kᵀ beside SDPA and makes
about a dozen memory-bound passes over them. Here (kernels in `fused_kernels`) each program keeps a
tile of query rows of one (batch, head) in registers and walks the key tiles with online reductions
(running max with rescaling, as flash attention does for the softmax), so no B·H·Tq·Tk tensor is
ever written. Its epilogue folds the tile's rows into 11 per-tile partials, and a second small kernel
merges those per head in float64 into the accumulator: two launches per layer instead of about fifty
small torch ops. The corpus job's row histograms (entropy fraction, largest probability) are counted
in the same kernel. Kept probability / score tensors, distance profiles and softcapped logits still
take the torch path. The figures are those of `capture._Collector._row_reductions` / `_merge_rows`
(`fused_row_figures` returns the per-row ones, for the tests).

The mask is described, not materialised: causal (query i sees keys ≤ i + Tk − Tq), per-batch key
validity (left/right padding), per-batch query validity (a padded query row gets n = 0) and an
optional sliding window (query position p sees keys > p − window). Key tiles outside the causal /
window band are not visited; tiles every row attends in full skip the mask arithmetic.
Grouped-query attention reads key head h // (H // H_kv) directly.
The description is derived from the torch path's own boolean mask and checked against it exactly,
once per mask tensor per forward (`describe_mask`); a mask it does not fit goes to the torch path.

`INSPECTOR_FUSED_STATS=auto|on|off` (default auto: on for CUDA tensors when Triton imports; `on`
also runs on CPU tensors under `TRITON_INTERPRET=1`, which is how the tests exercise it).
"""
import contextlib
import os
import warnings

import torch

from inspector import fused_kernels
from inspector.errors import InspectorError

ENV = "INSPECTOR_FUSED_STATS"
N_FIGURES = fused_kernels.N_ROW_FIGURES  # n, lo, hi, s1, s2, l, ey, e0
N_PARTIALS = fused_kernels.N_PARTIALS
MERGE_BLOCK_MAX = 256  # partials per merge step on CUDA; 1,024 spills registers on sm_90 (kernel_resources.py)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

try:  # Triton is optional: without it (or without a GPU) the torch path is used
    import triton
    import triton.language as tl
except (ImportError, RuntimeError, OSError):  # pragma: no cover - depends on the machine
    triton = None
    tl = None


def _interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter. Decided when triton is first imported (its
    standard library is built then), so TRITON_INTERPRET=1 must be set before that, at process start."""
    global _INTERPRETING
    if _INTERPRETING is None:
        if triton is None:
            return False
        from triton.runtime.interpreter import InterpretedFunction

        _INTERPRETING = isinstance(tl.zeros, InterpretedFunction)
    return _INTERPRETING


_INTERPRETING: bool | None = None  # fixed for the process once triton is imported


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "on", "off"):
        raise InspectorError(f"{ENV} must be auto, on or off (got {value!r}).",
                             hint=f"Unset {ENV} to use the fused kernel on CUDA only.")
    return value


def can_use(query: torch.Tensor, key: torch.Tensor) -> bool:
    """Whether the fused kernel is used for an attention call with these query/key tensors."""
    m = mode()
    if m == "off" or triton is None:
        if m == "on" and triton is None:
            raise InspectorError(f"{ENV}=on but Triton is not importable.",
                                 hint=f"Install triton, or set {ENV}=auto to use the torch path.")
        return False
    shapes_ok = (query.dim() == 4 and key.dim() == 4 and query.shape[0] == key.shape[0]
                 and query.shape[-1] == key.shape[-1] and key.shape[1] >= 1 and query.shape[1] % key.shape[1] == 0
                 and query.shape[-1] <= 256 and query.shape[2] >= 1 and key.shape[2] >= 1
                 and query.dtype in _DTYPES and key.dtype == query.dtype and query.device == key.device)
    if not shapes_ok:
        return False
    if query.device.type == "cuda":
        return True
    if m == "on":
        if not _interpreting():
            raise InspectorError(f"{ENV}=on needs CUDA tensors, or Triton's interpreter for CPU tensors.",
                                 hint=f"Start the process with TRITON_INTERPRET=1 (read when triton is imported), "
                                      f"or set {ENV}=auto to use the torch path on the CPU.")
        return True
    return False


# --------------------------------------------------------------------------- launching the kernels


def _tiles(d: int, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps). Small tiles under the interpreter (it is slow per element).

    CUDA: the largest tiles that compile for sm_90 without spilling registers under both Triton 3.9 (this
    project's CI) and 3.6 (what torch 2.11's CUDA build brings): bench/kernel_resources.py prints them and
    tests/unit/test_fused_compile.py keeps it so. 128×64 spills under 3.6. fp32 inputs take the
    non-tensor-core "ieee" dot, which needs far more registers per element. Speed per tile choice is
    what `bench_capture.py --cuda-suite` measures first.
    """
    if device.type != "cuda":
        return 16, 16, 1
    if dtype == torch.float32:
        return (32, 32, 4) if d <= 64 else (32, 32, 8) if d <= 128 else (32, 16, 4)
    return (128, 32, 8) if d <= 64 else (64, 32, 8)


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' one (a model split over several
    GPUs has layers on cuda:1, cuda:2, ...)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch(query, key, out, *, scale, causal, key_valid, query_valid, first_key, sliding_window, rows_out,
            n_tiles, block, warps, hist=None):
    B, H, Tq, d = query.shape
    H_kv, Tk = key.shape[1], key.shape[2]
    if H % H_kv:
        raise ValueError(f"query heads {H} are not a multiple of key heads {H_kv}")
    bm, bn = block
    kv = key_valid if key_valid is not None else out  # an unused pointer when the mask has no such part
    qv = query_valid if query_valid is not None else out
    fk = first_key if first_key is not None else out
    hp = hist if hist is not None else out
    window = int(sliding_window) if sliding_window is not None else 0
    launch = {"num_warps": warps, "num_stages": 2} if query.device.type == "cuda" else {}
    row_kernel, _ = fused_kernels.kernels(_interpreting())
    with _on_device(query.device):
        row_kernel[(B * H, n_tiles)](
            query, key, out, kv, qv, fk, hp,
            *query.stride(), *key.stride(),
            H, Tq, Tk, d, H // H_kv, Tk - Tq, window, float(scale), out.stride(0), n_tiles,
            CAUSAL=bool(causal) and Tq > 1, HAS_WINDOW=sliding_window is not None,
            HAS_KV=key_valid is not None, HAS_QV=query_valid is not None,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=max(16, triton.next_power_of_2(d)),
            IEEE=query.dtype == torch.float32, UPCAST=query.dtype == torch.bfloat16 and _interpreting(),
            ROWS_OUT=rows_out, HIST_BINS=hist.shape[-1] if hist is not None else 0, **launch,
        )


def _first_key(key_valid: torch.Tensor) -> torch.Tensor:
    """int32 (B,): each item's first real key, the sink's (0 for an item with no key)."""
    return key_valid.to(torch.int8).argmax(dim=1).to(torch.int32)


def _mask_parts(key_valid, query_valid, device):
    """int8 key/query validity (None where absent) and the int32 first real key of each item."""
    kv = key_valid.to(device=device, dtype=torch.int8).contiguous() if key_valid is not None else None
    qv = query_valid.to(device=device, dtype=torch.int8).contiguous() if query_valid is not None else None
    return kv, qv, (_first_key(kv) if kv is not None else None)


def fused_row_figures(query: torch.Tensor, key: torch.Tensor, *, scale: float, causal: bool,
                      key_valid: torch.Tensor | None = None, query_valid: torch.Tensor | None = None,
                      sliding_window: int | None = None, block: tuple[int, int] | None = None
                      ) -> tuple[torch.Tensor, ...]:
    """The 8 per-row figures of `capture._Collector._row_reductions(..., first)`, float32 tensors (B, H, Tq),
    with `first` the item's first real key (the sink figure: 0 on rows that do not attend it).

    query (B, H, Tq, d), key (B, H_kv, Tk, d) with H % H_kv == 0; key_valid (B, Tk) and query_valid
    (B, Tq) booleans (None = all valid); causal uses the offset Tk − Tq (queries are the last Tq
    positions); sliding_window w: a query at position p attends keys > p − w only.
    The capture uses `fused_head_partials` instead; this is the per-row reference the tests check.
    """
    B, H, Tq, d = query.shape
    out = torch.empty(N_FIGURES, B, H, Tq, dtype=torch.float32, device=query.device)
    if B * H * Tq == 0:
        return tuple(out)
    bm, bn, warps = _tiles(d, query.device, query.dtype)
    bm, bn = block or (bm, bn)
    kv, qv, first = _mask_parts(key_valid, query_valid, query.device)
    _launch(query, key, out, scale=scale, causal=causal, key_valid=kv, query_valid=qv, first_key=first,
            sliding_window=sliding_window, rows_out=True, n_tiles=triton.cdiv(Tq, bm), block=(bm, bn), warps=warps)
    return tuple(out)


def fused_head_partials(query: torch.Tensor, key: torch.Tensor, *, scale: float, causal: bool,
                        key_valid: torch.Tensor | None = None, query_valid: torch.Tensor | None = None,
                        first_key: torch.Tensor | None = None, sliding_window: int | None = None,
                        block: tuple[int, int] | None = None, warps: int | None = None,
                        hist: torch.Tensor | None = None) -> torch.Tensor:
    """float32 (11, B, H, ⌈Tq/BLOCK_M⌉): each query tile's rows folded into the accumulator's figures
    (`fused_kernels.PARTIALS`; moments of the scaled logits). Arguments as `fused_row_figures`; key_valid /
    query_valid int8 and first_key int32 (B,) as `_mask_parts` makes them, or None. `hist`: a zeroed
    int32 (2, H, bins) tensor that receives the row counts of the entropy-fraction and max-probability
    histograms (`_Accumulator.add_row_histograms`)."""
    B, H, Tq, d = query.shape
    if key_valid is not None and first_key is None:
        first_key = _first_key(key_valid)
    bm, bn, w = _tiles(d, query.device, query.dtype)
    bm, bn = block or (bm, bn)
    n_tiles = triton.cdiv(Tq, bm)
    out = torch.empty(N_PARTIALS, B, H, n_tiles, dtype=torch.float32, device=query.device)
    if B * H * Tq:
        _launch(query, key, out, scale=scale, causal=causal, key_valid=key_valid, query_valid=query_valid,
                first_key=first_key, sliding_window=sliding_window, rows_out=False, n_tiles=n_tiles,
                block=(bm, bn), warps=warps or w, hist=hist)
    return out


def merge_partials_fused(acc, scale: float, partials: torch.Tensor, hist: torch.Tensor | None = None) -> None:
    """Fold `fused_head_partials` (and its row-count `hist`, if any) into the `_Accumulator` tensors in
    place, in one launch (float64, one program per head), as `capture._Collector._merge_rows` does with
    per-row figures."""
    _, B, H, n_tiles = partials.shape
    assert partials.dtype == torch.float32 and partials.is_contiguous()
    bins = hist.shape[-1] if hist is not None else 0
    fields = fused_kernels.PARTIALS + (("hist_frac", "hist_maxp") if bins else ())
    tensors = [getattr(acc, name) for name in fields]
    ready = acc.__dict__.get("_fused_ready")  # the tensors last checked: skip the checks while they stay
    if ready is None or len(ready) != len(tensors) or any(a is not b for a, b in zip(ready, tensors)):
        for i, (name, t) in enumerate(zip(fields, tensors)):  # contiguous float64 on the partials' device
            if t.dtype != torch.float64 or not t.is_contiguous() or t.device != partials.device:
                tensors[i] = t.to(device=partials.device, dtype=torch.float64).contiguous()
                setattr(acc, name, tensors[i])
        acc._fused_ready = tuple(tensors)
    cuda = partials.device.type == "cuda"
    R = B * n_tiles
    block = min(MERGE_BLOCK_MAX, max(32, triton.next_power_of_2(R))) if cuda else 64
    _, merge_kernel = fused_kernels.kernels(_interpreting())
    with _on_device(partials.device):
        merge_kernel[(H,)](
            partials, *tensors[:len(fused_kernels.PARTIALS)],
            hist if bins else partials, *(tensors[-2:] if bins else (partials, partials)),
            partials.stride(0), H, n_tiles, R, 1.0 / float(scale),
            BLOCK=block, HIST_BINS=bins, HIST_P2=triton.next_power_of_2(max(bins, 1)),
            **({"num_warps": 4} if cuda else {}),
        )


# --------------------------------------------------------------------------- mask description


def describe_mask(valid: torch.Tensor, causal: bool, window_hint: int | None = None):
    """(causal, key_valid (B, Tk), query_valid (B, Tq), window) with
    valid == query_valid ∧ key_valid ∧ causal band ∧ window exactly, or None when no such description fits.

    `valid` is the boolean (B, 1, Tq, Tk) mask the torch path uses. Checked exactly against a
    rebuilt mask: a few passes over B·Tq·Tk booleans and one host sync (callers cache per mask).
    """
    if valid.dim() != 4 or valid.shape[1] != 1:
        return None
    v = valid[:, 0]  # (B, Tq, Tk)
    _, Tq, Tk = v.shape
    qv = v.any(dim=2)
    kv = v.any(dim=1)
    both = qv[:, :, None] & kv[:, None, :]
    qpos = torch.arange(Tq, device=v.device)[:, None] + (Tk - Tq)
    kpos = torch.arange(Tk, device=v.device)[None, :]
    candidates = [(causal, None), (not causal, None)]
    if window_hint:
        candidates.insert(1, (True, int(window_hint)))
    if causal or window_hint is None:
        # a window seen in the mask itself: the largest attended distance + 1
        dist = torch.where(v, qpos[None] - kpos[None], torch.full_like(kpos[None], -1)).amax()
        candidates.insert(1, (True, max(1, int(dist) + 1)))
    for is_causal, window in candidates:
        band = torch.ones(Tq, Tk, dtype=torch.bool, device=v.device)
        if is_causal and Tq > 1:
            band &= kpos <= qpos
        if window is not None:
            band &= kpos > qpos - window
        if torch.equal(both & band[None], v):
            return (is_causal and Tq > 1), kv, qv, window
    return None


def _window_hint(module) -> int | None:
    for owner in (module, getattr(module, "config", None)):
        w = getattr(owner, "sliding_window", None)
        if isinstance(w, int) and not isinstance(w, bool) and w > 0:
            return w
    return None


def observe(collector, module, query, key, attention_mask, scale: float, causal: bool, acc) -> bool:
    """Fold one attention call's statistics into `acc` with the two fused kernels (per-tile partials, then
    the per-head float64 merge): two launches per layer. False when the torch path must do it."""
    global _failed
    if _failed is not None and mode() == "auto":
        return False
    try:
        bins = int(getattr(acc, "hist_bins", 0))
        hist = torch.zeros(2, query.shape[1], bins, dtype=torch.int32, device=query.device) if bins else None
        partials = head_partials_for_call(collector, module, query, key, attention_mask, scale, causal, hist)
        if partials is None:
            return False
        merge_partials_fused(acc, scale, partials, hist)
    except InspectorError:
        raise
    except Exception as err:  # a kernel that does not compile or launch on this GPU / Triton
        if mode() != "auto":
            raise
        # auto: nothing was merged yet (a failed launch writes nothing); keep the torch path from now on
        _failed = f"{type(err).__name__}: {err}"
        warnings.warn(f"inspector: the fused attention-statistics kernel failed ({_failed[:300]}); using the "
                      f"torch path for the rest of this process. Set {ENV}=off to silence this.", stacklevel=2)
        return False
    return True


_failed: str | None = None  # why the fused path was switched off in auto mode, if it was


def _launch_parts(described, device):
    """(causal, key_valid int8, query_valid int8, first_key int32, window) for the kernel, from a mask
    description. An all-true key or query validity becomes None, so unpadded batches get full tiles."""
    is_causal, kv, qv, window = described
    if kv is not None and bool(kv.all()):
        kv = None
    if qv is not None and bool(qv.all()):
        qv = None
    kv, qv, first = _mask_parts(kv, qv, device)
    return is_causal, kv, qv, first, window


def head_partials_for_call(collector, module, query, key, attention_mask, scale: float, causal: bool, hist=None):
    """The per-tile partials of one attention call from the fused kernel, or None (use the torch path).

    `collector` supplies the torch path's mask (`_valid_mask`) and a per-forward cache, so the mask is
    described (with its host syncs) once per distinct mask tensor, once per forward for most models,
    not once per layer.
    """
    if not can_use(query, key):
        return None
    B, _, Tq, _ = query.shape
    Tk = key.shape[2]
    token_mask = collector.token_mask
    cache = collector.__dict__.setdefault("_fused_masks", {})
    key_ = (id(attention_mask), id(token_mask), causal, B, Tq, Tk, str(query.device))
    hit = cache.get(key_)
    if hit is not None and hit[0] is attention_mask and hit[1] is token_mask:
        parts = hit[2]
    else:
        if attention_mask is None:  # what `_valid_mask` builds then: causal band ∧ real tokens
            tm = token_mask.to(query.device) if token_mask is not None and token_mask.shape[1] == Tq == Tk else None
            described = (causal and Tq > 1, tm, tm, None)
        else:
            valid = collector._valid_mask(attention_mask, causal, 0, B, Tq, Tk, query.device)
            described = describe_mask(valid, causal, _window_hint(module))
        parts = _launch_parts(described, query.device) if described is not None else None
        cache[key_] = (attention_mask, token_mask, parts)
    if parts is None:
        return None
    is_causal, kv, qv, first, window = parts
    return fused_head_partials(query, key, scale=scale, causal=is_causal, key_valid=kv, query_valid=qv,
                               first_key=first, sliding_window=window, hist=hist)


__all__ = ["ENV", "can_use", "describe_mask", "fused_head_partials", "fused_row_figures", "head_partials_for_call",
           "merge_partials_fused", "mode", "observe"]
