"""Per-row figures of the pre-softmax logits QKᵀ in one Triton kernel (flash-attention style).

The torch path in `capture._Collector` materialises float32 chunks of q·kᵀ beside SDPA and makes
about a dozen memory-bound passes over them. Here each program keeps a tile of query rows of one
(batch, head) in registers and walks the key tiles with online reductions (running max with
rescaling, as flash attention does for the softmax), so no B·H·Tq·Tk tensor is ever written.
It produces exactly the figures of `capture._Collector._row_reductions`, per (batch, head, query
row), as float32 (B, H, Tq) tensors that `_merge_rows` folds into the float64 per-head sums:

    n   number of attended keys          lo  min z          hi  max z (= zmax)
    s1  Σ (z − zmax)                     s2  Σ (z − zmax)²
    l   Σ exp(z − zmax)                  ey  Σ exp(z − zmax)·(z − zmax)
    e0  exp(z − zmax) at the row's first attended key (0 for a row with no key)

with z = scale·(q·k) over attended keys only. When the running max moves from m to m' (δ = m − m' ≤ 0):
Σ(z−m') = Σ(z−m) + n·δ, Σ(z−m')² = Σ(z−m)² + 2δ·Σ(z−m) + n·δ², l' = l·e^δ, ey' = e^δ·(ey + δ·l)
(every term of each sum has the same sign: no cancellation). e0 is kept as the raw z of the first
attended key and exponentiated once at the end.

The mask is described, not materialised: causal (query i sees keys ≤ i + Tk − Tq), per-batch key
validity (left/right padding), per-batch query validity (a padded query row gets n = 0) and an
optional sliding window (query position p sees keys > p − window). Key tiles outside the causal /
window band are not visited. Grouped-query attention reads key head h // (H // H_kv) directly.
The description is derived from the torch path's own boolean mask and checked against it exactly,
once per mask tensor per forward (`describe_mask`); a mask it does not fit goes to the torch path.

A second small kernel (one program per head) does `_merge_rows`' float64 per-head merge straight into
the accumulator tensors, so a layer costs two launches instead of about fifty small torch ops.

`INSPECTOR_FUSED_STATS=auto|on|off` (default auto: on for CUDA tensors when Triton imports; `on`
also runs on CPU tensors under `TRITON_INTERPRET=1`, which is how the tests exercise it).
"""
import os
import warnings

import torch

from inspector.errors import InspectorError

ENV = "INSPECTOR_FUSED_STATS"
N_FIGURES = 8  # n, lo, hi, s1, s2, l, ey, e0
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
    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


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


# --------------------------------------------------------------------------- the kernel


if triton is not None:
    def _row_figures_kernel(
        q_ptr, k_ptr, out_ptr, kv_ptr, qv_ptr,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_ob, stride_oh, stride_om,
        H, Tq, Tk, D, group, offset, window, scale, fig_stride,
        CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KV: tl.constexpr, HAS_QV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)  # B·H on axis 0 (up to 2³¹ programs), query tiles on axis 1
        pid_m = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)  # int64 offsets: b·stride can pass 2³¹ on large batches
        h = pid_bh % H
        hk = h // group  # grouped-query attention: the key head shared by `group` query heads
        m0 = pid_m * BLOCK_M
        rows = m0 + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_in = rows < Tq
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                    mask=row_in[:, None] & (dims[None, :] < D), other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        row_ok = row_in
        if HAS_QV:
            row_ok = row_ok & (tl.load(qv_ptr + b * Tq + rows, mask=row_in, other=0) != 0)
        qpos = rows + offset  # position of each query among the keys

        inf = float("inf")
        m_i = tl.full([BLOCK_M], -inf, tl.float32)
        n_i = tl.zeros([BLOCK_M], tl.float32)
        lo_i = tl.full([BLOCK_M], inf, tl.float32)
        s1_i = tl.zeros([BLOCK_M], tl.float32)
        s2_i = tl.zeros([BLOCK_M], tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        ey_i = tl.zeros([BLOCK_M], tl.float32)
        z0_i = tl.zeros([BLOCK_M], tl.float32)  # z at the first attended key

        n_lo = 0
        n_hi = Tk
        if CAUSAL:  # key tiles after the last query of this tile are fully masked: not visited
            n_hi = tl.minimum(Tk, tl.maximum(tl.minimum(m0 + BLOCK_M, Tq) - 1 + offset + 1, 0))
        if HAS_WINDOW:  # key tiles older than the window of the tile's first query: not visited
            n_lo = (tl.maximum(m0 + offset - window + 1, 0) // BLOCK_N) * BLOCK_N
        k_base = k_ptr + b * stride_kb + hk * stride_kh
        for n0 in range(n_lo, n_hi, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_in = cols < Tk
            k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
                        mask=col_in[:, None] & (dims[None, :] < D), other=0.0)
            if UPCAST:  # the interpreter's bf16 dot is wrong; bf16 → fp32 is exact, so is every product
                k = k.to(tl.float32)
            if IEEE:
                x = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                x = tl.dot(q, tl.trans(k))
            z = x * scale  # (BLOCK_M, BLOCK_N) float32
            valid = row_ok[:, None] & col_in[None, :]
            if HAS_KV:
                valid = valid & (tl.load(kv_ptr + b * Tk + cols, mask=col_in, other=0) != 0)[None, :]
            if CAUSAL:
                valid = valid & (cols[None, :] <= qpos[:, None])
            if HAS_WINDOW:
                valid = valid & (cols[None, :] > qpos[:, None] - window)

            n_t = tl.sum(valid.to(tl.float32), axis=1)
            m_t = tl.max(tl.where(valid, z, -inf), axis=1)
            lo_i = tl.minimum(lo_i, tl.min(tl.where(valid, z, inf), axis=1))
            # z at the first attended key of rows that had none before this tile (most tiles: no such row)
            starts = (n_i == 0) & (n_t > 0)
            if tl.max(starts.to(tl.int32), axis=0) > 0:
                first = tl.min(tl.where(valid, cols[None, :], Tk + BLOCK_N), axis=1)
                z_first = tl.sum(tl.where(cols[None, :] == first[:, None], z, 0.0), axis=1)
                z0_i = tl.where(starts, z_first, z0_i)

            m_new = tl.maximum(m_i, m_t)
            seen = n_i > 0
            delta = tl.where(seen, m_i, 0.0) - tl.where(seen, m_new, 0.0)  # ≤ 0; 0 for rows with nothing yet
            alpha = tl.exp(delta)
            s2_i = s2_i + 2.0 * delta * s1_i + n_i * delta * delta
            s1_i = s1_i + n_i * delta
            ey_i = alpha * (ey_i + delta * l_i)
            l_i = l_i * alpha

            shift = tl.where(n_i + n_t > 0, m_new, 0.0)
            y = tl.where(valid, z - shift[:, None], 0.0)
            p = tl.where(valid, tl.exp(y), 0.0)
            s1_i += tl.sum(y, axis=1)
            s2_i += tl.sum(y * y, axis=1)
            l_i += tl.sum(p, axis=1)
            ey_i += tl.sum(p * y, axis=1)
            n_i += n_t
            m_i = m_new

        e0_i = tl.where(n_i > 0, tl.exp(z0_i - tl.where(n_i > 0, m_i, 0.0)), 0.0)
        o = out_ptr + b * stride_ob + h * stride_oh + rows * stride_om
        tl.store(o, n_i, mask=row_in)
        tl.store(o + fig_stride, lo_i, mask=row_in)
        tl.store(o + 2 * fig_stride, m_i, mask=row_in)
        tl.store(o + 3 * fig_stride, s1_i, mask=row_in)
        tl.store(o + 4 * fig_stride, s2_i, mask=row_in)
        tl.store(o + 5 * fig_stride, l_i, mask=row_in)
        tl.store(o + 6 * fig_stride, ey_i, mask=row_in)
        tl.store(o + 7 * fig_stride, e0_i, mask=row_in)


    def _merge_kernel(
        n_ptr, lo_ptr, hi_ptr, s1_ptr, s2_ptr, l_ptr, ey_ptr, e0_ptr,
        acc_n, acc_mean, acc_m2, acc_min, acc_max, acc_ent, acc_rows, acc_frac, acc_frac_rows, acc_maxp, acc_sink,
        stride_b, stride_h, B, Tq, inv_scale,
        BLOCK: tl.constexpr,
    ):
        """One program per head: `capture._Collector._merge_rows` (float64) over all B·Tq rows, folded
        into the accumulator tensors in place (Chan et al. for the moments)."""
        h = tl.program_id(0)
        R = B * Tq
        inf = float("inf")
        # pass 1: counts, mean, extremes, softmax figures
        n_sum = tl.zeros([BLOCK], tl.float64)
        nm_sum = tl.zeros([BLOCK], tl.float64)
        lo_min = tl.full([BLOCK], inf, tl.float64)
        hi_max = tl.full([BLOCK], -inf, tl.float64)
        ent = tl.zeros([BLOCK], tl.float64)
        maxp = tl.zeros([BLOCK], tl.float64)
        sink = tl.zeros([BLOCK], tl.float64)
        rows = tl.zeros([BLOCK], tl.float64)
        frac = tl.zeros([BLOCK], tl.float64)
        frac_rows = tl.zeros([BLOCK], tl.float64)
        for r0 in range(0, R, BLOCK):
            r = r0 + tl.arange(0, BLOCK)
            inside = r < R
            off = (r // Tq) * stride_b + h * stride_h + (r % Tq)
            n = tl.load(n_ptr + off, mask=inside, other=0.0).to(tl.float64)
            ok = n > 0
            safe_n = tl.where(ok, n, 1.0)
            hi = tl.where(ok, tl.load(hi_ptr + off, mask=inside, other=0.0).to(tl.float64), 0.0)
            s1 = tl.load(s1_ptr + off, mask=inside, other=0.0).to(tl.float64)
            mean_row = hi + s1 / safe_n
            n_sum += n
            nm_sum += n * mean_row
            lo_min = tl.minimum(lo_min, tl.where(ok, tl.load(lo_ptr + off, mask=inside, other=0.0).to(tl.float64), inf))
            hi_max = tl.maximum(hi_max, tl.where(ok, hi, -inf))
            lsum = tl.load(l_ptr + off, mask=inside, other=0.0).to(tl.float64)
            safe_l = tl.where(lsum > 0, lsum, 1.0)
            rowf = tl.where(ok, 1.0, 0.0).to(tl.float64)
            ey = tl.load(ey_ptr + off, mask=inside, other=0.0).to(tl.float64)
            entropy = (tl.log(safe_l) - ey / safe_l) * rowf
            ent += entropy
            maxp += rowf / safe_l
            sink += tl.load(e0_ptr + off, mask=inside, other=0.0).to(tl.float64) / safe_l * rowf
            rows += rowf
            multi = tl.where(n >= 2, 1.0, 0.0).to(tl.float64)
            frac += entropy / tl.log(tl.maximum(n, 2.0)) * multi
            frac_rows += multi
        n_head = tl.sum(n_sum, axis=0)
        mean_head = tl.sum(nm_sum, axis=0) / tl.maximum(n_head, 1.0)
        # pass 2: second moment about the head's mean (no cancellation)
        m2_acc = tl.zeros([BLOCK], tl.float64)
        for r0 in range(0, R, BLOCK):
            r = r0 + tl.arange(0, BLOCK)
            inside = r < R
            off = (r // Tq) * stride_b + h * stride_h + (r % Tq)
            n = tl.load(n_ptr + off, mask=inside, other=0.0).to(tl.float64)
            ok = n > 0
            safe_n = tl.where(ok, n, 1.0)
            hi = tl.where(ok, tl.load(hi_ptr + off, mask=inside, other=0.0).to(tl.float64), 0.0)
            s1 = tl.load(s1_ptr + off, mask=inside, other=0.0).to(tl.float64)
            s2 = tl.load(s2_ptr + off, mask=inside, other=0.0).to(tl.float64)
            mean_y = s1 / safe_n
            m2_row = tl.maximum(s2 - s1 * mean_y, 0.0)
            d = hi + mean_y - mean_head
            m2_acc += m2_row + n * d * d
        m2_head = tl.sum(m2_acc, axis=0)
        # fold into the accumulator (unscaled moments), as _Accumulator.add_moments does
        mean_new = mean_head * inv_scale
        m2_new = m2_head * inv_scale * inv_scale
        a_n = tl.load(acc_n + h)
        a_mean = tl.load(acc_mean + h)
        tot = a_n + n_head
        safe = tl.where(tot > 0, tot, 1.0)
        delta = mean_new - a_mean
        tl.store(acc_mean + h, tl.where(tot > 0, a_mean + delta * n_head / safe, a_mean))
        tl.store(acc_m2 + h, tl.load(acc_m2 + h) + m2_new + delta * delta * a_n * n_head / safe)
        tl.store(acc_n + h, tot)
        tl.store(acc_min + h, tl.minimum(tl.load(acc_min + h), tl.min(lo_min, axis=0) * inv_scale))
        tl.store(acc_max + h, tl.maximum(tl.load(acc_max + h), tl.max(hi_max, axis=0) * inv_scale))
        tl.store(acc_ent + h, tl.load(acc_ent + h) + tl.sum(ent, axis=0))
        tl.store(acc_maxp + h, tl.load(acc_maxp + h) + tl.sum(maxp, axis=0))
        tl.store(acc_sink + h, tl.load(acc_sink + h) + tl.sum(sink, axis=0))
        tl.store(acc_rows + h, tl.load(acc_rows + h) + tl.sum(rows, axis=0))
        tl.store(acc_frac + h, tl.load(acc_frac + h) + tl.sum(frac, axis=0))
        tl.store(acc_frac_rows + h, tl.load(acc_frac_rows + h) + tl.sum(frac_rows, axis=0))


_compiled: dict = {}


def _kernel(fn=None):
    """The jitted kernel (an interpreted one when Triton was imported with TRITON_INTERPRET=1)."""
    fn = fn or _row_figures_kernel
    if fn not in _compiled:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction

        _compiled[fn] = (InterpretedFunction if _interpreting() else JITFunction)(fn)
    return _compiled[fn]


def _tiles(d: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps). Small tiles under the interpreter (it is slow per element)."""
    if device.type != "cuda":
        return 16, 16, 1
    if d <= 64:
        return 128, 64, 8
    return 64, 64, 4


def fused_row_figures(query: torch.Tensor, key: torch.Tensor, *, scale: float, causal: bool,
                      key_valid: torch.Tensor | None = None, query_valid: torch.Tensor | None = None,
                      sliding_window: int | None = None, block: tuple[int, int] | None = None
                      ) -> tuple[torch.Tensor, ...]:
    """The 8 per-row figures of `capture._Collector._row_reductions`, float32 tensors (B, H, Tq).

    query (B, H, Tq, d), key (B, H_kv, Tk, d) with H % H_kv == 0; key_valid (B, Tk) and query_valid
    (B, Tq) booleans (None = all valid); causal uses the offset Tk − Tq (queries are the last Tq
    positions); sliding_window w: a query at position p attends keys > p − w only.
    """
    B, H, Tq, d = query.shape
    H_kv, Tk = key.shape[1], key.shape[2]
    if H % H_kv:
        raise ValueError(f"query heads {H} are not a multiple of key heads {H_kv}")
    out = torch.empty(N_FIGURES, B, H, Tq, dtype=torch.float32, device=query.device)
    if B * H * Tq == 0:
        return tuple(out)
    bm, bn, warps = _tiles(d, query.device)
    if block is not None:
        bm, bn = block
    kv = key_valid.to(device=query.device, dtype=torch.int8).contiguous() if key_valid is not None else out
    qv = query_valid.to(device=query.device, dtype=torch.int8).contiguous() if query_valid is not None else out
    window = int(sliding_window) if sliding_window is not None else 0
    grid = (B * H, triton.cdiv(Tq, bm))
    launch = {"num_warps": warps, "num_stages": 2} if query.device.type == "cuda" else {}
    _kernel()[grid](
        query, key, out, kv, qv,
        *query.stride(), *key.stride(),
        out.stride(1), out.stride(2), out.stride(3),
        H, Tq, Tk, d, H // H_kv, Tk - Tq, window, float(scale), out.stride(0),
        CAUSAL=bool(causal) and Tq > 1, HAS_WINDOW=sliding_window is not None,
        HAS_KV=key_valid is not None, HAS_QV=query_valid is not None,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=max(16, triton.next_power_of_2(d)),
        IEEE=query.dtype == torch.float32, UPCAST=query.dtype == torch.bfloat16 and _interpreting(), **launch,
    )
    return tuple(out)


def merge_rows_fused(acc, scale: float, *figures: torch.Tensor) -> None:
    """`capture._Collector._merge_rows(acc, scale, *figures)` in one launch: float64 per-head sums of the
    (B, H, Tq) float32 row figures, folded into the `_Accumulator` tensors in place."""
    n = figures[0]
    B, H, Tq = n.shape
    assert all(f.shape == n.shape and f.stride() == n.stride() and f.dtype == torch.float32 for f in figures)
    assert n.stride(2) == 1
    fields = ("n", "mean", "m2", "min", "max", "ent_sum", "rows", "frac_sum", "frac_rows", "maxp_sum", "sink_sum")
    for name in fields:  # contiguous float64 (H,) on the figures' device, updated in place
        t = getattr(acc, name)
        if t.dtype != torch.float64 or not t.is_contiguous() or t.device != n.device:
            setattr(acc, name, t.to(device=n.device, dtype=torch.float64).contiguous())
    launch = {"num_warps": 4} if n.device.type == "cuda" else {}
    _kernel(_merge_kernel)[(H,)](
        *figures, *(getattr(acc, name) for name in fields),
        n.stride(0), n.stride(1), B, Tq, 1.0 / float(scale),
        BLOCK=256 if n.device.type == "cuda" else 64, **launch,
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
    """Fold one attention call's statistics into `acc` with the two fused kernels (row figures, then the
    per-head merge): two launches per layer. False when the torch path must do it."""
    global _failed
    if _failed is not None and mode() == "auto":
        return False
    try:
        figures = row_figures_for_call(collector, module, query, key, attention_mask, scale, causal)
        if figures is None:
            return False
        merge_rows_fused(acc, scale, *figures)
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


def row_figures_for_call(collector, module, query, key, attention_mask, scale: float, causal: bool):
    """The row figures of one attention call from the fused kernel, or None (use the torch path).

    `collector` supplies the torch path's mask (`_valid_mask`) and a per-forward cache, so the mask is
    described once per distinct mask tensor (once per forward for most models), not once per layer.
    """
    if not can_use(query, key):
        return None
    B, _, Tq, _ = query.shape
    Tk = key.shape[2]
    token_mask = collector.token_mask
    tm = token_mask.to(query.device) if token_mask is not None and token_mask.shape[1] == Tq == Tk else None
    if attention_mask is None:  # what `_valid_mask` builds then: causal band ∧ real tokens
        described = (causal and Tq > 1, tm, tm, None)
    else:
        cache = collector.__dict__.setdefault("_fused_masks", {})
        key_ = (id(attention_mask), id(token_mask), causal, B, Tq, Tk)
        hit = cache.get(key_)
        if hit is not None and hit[0] is attention_mask and hit[1] is token_mask:
            described = hit[2]
        else:
            valid = collector._valid_mask(attention_mask, causal, 0, B, Tq, Tk, query.device)
            described = describe_mask(valid, causal, _window_hint(module))
            cache[key_] = (attention_mask, token_mask, described)
    if described is None:
        return None
    is_causal, kv, qv, window = described
    figures = fused_row_figures(query, key, scale=scale, causal=is_causal, key_valid=kv, query_valid=qv,
                                sliding_window=window)
    if window is not None and window < Tk:
        # The kernel's e0 is at each row's first attended key; the sink figure is the mass on the first
        # real token, which a row at position p sees only while p − window < first: 0 on the other rows.
        first = kv.to(torch.uint8).argmax(dim=1) if kv is not None else torch.zeros(B, dtype=torch.long,
                                                                                    device=query.device)
        pos = torch.arange(Tq, device=query.device) + (Tk - Tq)
        beyond = pos[None, :] - window >= first.to(query.device)[:, None]  # (B, Tq)
        figures[7].masked_fill_(beyond[:, None, :], 0.0)
    return figures


__all__ = ["ENV", "can_use", "describe_mask", "fused_row_figures", "merge_rows_fused", "mode", "observe",
           "row_figures_for_call"]
