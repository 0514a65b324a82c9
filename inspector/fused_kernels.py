"""The Triton kernels behind `fused_stats` (raw functions: `fused_stats` jits or interprets them).

`row_figures_kernel`: one program per (batch·head, tile of BLOCK_M query rows) walks the key tiles with
online reductions, flash-attention style, and never writes a B·H·Tq·Tk tensor. Per query row it keeps

    n   number of attended keys          lo  min z          m   max z (running)
    s1  Σ (z − m)                        s2  Σ (z − m)²
    l   Σ exp(z − m)                     ey  Σ exp(z − m)·(z − m)

with z = scale·(q·k) over attended keys. When the running max moves from m to m' (δ = m − m' ≤ 0):
Σ(z−m') = Σ(z−m) + n·δ, Σ(z−m')² = Σ(z−m)² + 2δ·Σ(z−m) + n·δ², l' = l·e^δ, ey' = e^δ·(ey + δ·l)
(every term of each sum has the same sign: no cancellation).

A key tile is "full" when every (row, key) pair in it is attended: rows and keys in range, inside the
causal band and the window, and no padding. Full tiles (most of a long unpadded sequence) skip every
mask operation (by a count of the source's operations, about 10 per element instead of 22; not timed
on a GPU yet); the other tiles apply the mask per element.
Key tiles outside the causal / window band are not visited at all.

With ROWS_OUT the kernel writes the 8 per-row figures of `capture._Collector._row_reductions` (the
reference the tests compare against). Without it, the epilogue folds its BLOCK_M rows in registers
(float32; the moments by Chan et al.: the tile's mean first, then Σ m2 + n·(mean_row − mean)²) into
11 per-tile partials, so only B·H·⌈Tq/BLOCK_M⌉·11 floats leave the kernel; with HIST_BINS it also
counts each row's entropy fraction and largest probability into per-head bins (int32 atomics).

`merge_partials_kernel`: one program per head merges those partials in float64 (two passes: the
head's mean, then the second moment about it) straight into the `capture._Accumulator` tensors.
"""
try:
    import triton.language as tl
except (ImportError, RuntimeError, OSError):  # pragma: no cover - depends on the machine
    tl = None

N_ROW_FIGURES = 8  # n, lo, hi, s1, s2, l, ey, e0 (as `_row_reductions` returns them)
PARTIALS = ("n", "mean", "m2", "min", "max", "ent_sum", "rows", "frac_sum", "frac_rows", "maxp_sum", "sink_sum")
N_PARTIALS = len(PARTIALS)  # per (batch, head, query tile), named as the accumulator fields they fold into

if tl is not None:
    def fold_tile(z, valid, n_i, m_i, lo_i, s1_i, s2_i, l_i, ey_i, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        """One key tile of scaled logits z (BLOCK_M, BLOCK_N) into the running row figures."""
        inf = float("inf")
        if MASKED:
            n_t = tl.sum(valid.to(tl.float32), axis=1)
            m_t = tl.max(tl.where(valid, z, -inf), axis=1)
            lo_t = tl.min(tl.where(valid, z, inf), axis=1)
        else:
            n_t = tl.full(n_i.shape, BLOCK_N, tl.float32)
            m_t = tl.max(z, axis=1)
            lo_t = tl.min(z, axis=1)
        lo_i = tl.minimum(lo_i, lo_t)

        m_new = tl.maximum(m_i, m_t)
        seen = n_i > 0
        delta = tl.where(seen, m_i, 0.0) - tl.where(seen, m_new, 0.0)  # ≤ 0; 0 for rows with nothing yet
        alpha = tl.exp(delta)
        s2_i = s2_i + 2.0 * delta * s1_i + n_i * delta * delta
        s1_i = s1_i + n_i * delta
        ey_i = alpha * (ey_i + delta * l_i)
        l_i = l_i * alpha
        if MASKED:
            shift = tl.where(n_i + n_t > 0, m_new, 0.0)
            y = tl.where(valid, z - shift[:, None], 0.0)
            p = tl.where(valid, tl.exp(y), 0.0)
        else:
            y = z - m_new[:, None]
            p = tl.exp(y)
        s1_i += tl.sum(y, axis=1)
        s2_i += tl.sum(y * y, axis=1)
        l_i += tl.sum(p, axis=1)
        ey_i += tl.sum(p * y, axis=1)
        n_i += n_t
        return n_i, m_new, lo_i, s1_i, s2_i, l_i, ey_i

    def row_figures_kernel(
        q_ptr, k_ptr, out_ptr, kv_ptr, qv_ptr, first_ptr, hist_ptr,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        H, Tq, Tk, D, group, offset, window, scale, fig_stride, n_tiles,
        CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KV: tl.constexpr, HAS_QV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
        UPCAST: tl.constexpr, ROWS_OUT: tl.constexpr, HIST_BINS: tl.constexpr,
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
        # The sink figure is the probability on the item's first real key: its logit is taken from the one
        # key tile that holds that key (a scalar test per tile, no per-row search).
        first_key = 0
        if HAS_KV:
            first_key = tl.load(first_ptr + b)
        z_first = tl.zeros([BLOCK_M], tl.float32)
        # A row that attends any key attends the first real one (it is ≤ every key the row sees), unless a
        # sliding window has moved past it.
        sees_first = row_ok
        if HAS_WINDOW:
            sees_first = sees_first & (first_key > qpos - window)

        last_row = tl.minimum(m0 + BLOCK_M, Tq) - 1
        n_lo = 0
        n_hi = Tk
        if CAUSAL:  # key tiles after the last query of this tile are fully masked: not visited
            n_hi = tl.minimum(Tk, tl.maximum(last_row + offset + 1, 0))
        if HAS_WINDOW:  # key tiles older than the window of the tile's first query: not visited
            n_lo = (tl.maximum(m0 + offset - window + 1, 0) // BLOCK_N) * BLOCK_N
        # Key tiles [full_lo, full_hi) are attended by every row of this tile (empty with padding).
        full_lo = 0
        full_hi = Tk
        if HAS_KV:
            full_hi = 0
        if HAS_QV:
            full_hi = 0
        if m0 + BLOCK_M > Tq:  # the last query tile is partial
            full_hi = 0
        if CAUSAL:
            full_hi = tl.minimum(full_hi, m0 + offset + 1)  # every key ≤ the first row's position
        if HAS_WINDOW:
            full_lo = tl.maximum(m0 + BLOCK_M - 1 + offset - window + 1, 0)  # every key inside the last row's window
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
            if (first_key >= n0) & (first_key < n0 + BLOCK_N):
                z_first = tl.sum(tl.where(cols[None, :] == first_key, z, 0.0), axis=1)
            if (n0 >= full_lo) & (n0 + BLOCK_N <= full_hi):
                n_i, m_i, lo_i, s1_i, s2_i, l_i, ey_i = fold_tile(
                    z, z, n_i, m_i, lo_i, s1_i, s2_i, l_i, ey_i, BLOCK_N, False)
            else:
                valid = row_ok[:, None] & col_in[None, :]
                if HAS_KV:
                    valid = valid & (tl.load(kv_ptr + b * Tk + cols, mask=col_in, other=0) != 0)[None, :]
                if CAUSAL:
                    valid = valid & (cols[None, :] <= qpos[:, None])
                if HAS_WINDOW:
                    valid = valid & (cols[None, :] > qpos[:, None] - window)
                n_i, m_i, lo_i, s1_i, s2_i, l_i, ey_i = fold_tile(
                    z, valid, n_i, m_i, lo_i, s1_i, s2_i, l_i, ey_i, BLOCK_N, True)

        ok = n_i > 0
        # exp(z − max) at the item's first real key, on the rows that attend it (an item with no real key: n = 0)
        e0_i = tl.where(ok & sees_first, tl.exp(z_first - tl.where(ok, m_i, 0.0)), 0.0)
        if ROWS_OUT:
            o = out_ptr + pid_bh.to(tl.int64) * Tq + rows
            tl.store(o, n_i, mask=row_in)
            tl.store(o + fig_stride, lo_i, mask=row_in)
            tl.store(o + 2 * fig_stride, m_i, mask=row_in)
            tl.store(o + 3 * fig_stride, s1_i, mask=row_in)
            tl.store(o + 4 * fig_stride, s2_i, mask=row_in)
            tl.store(o + 5 * fig_stride, l_i, mask=row_in)
            tl.store(o + 6 * fig_stride, ey_i, mask=row_in)
            tl.store(o + 7 * fig_stride, e0_i, mask=row_in)
        else:
            okf = ok.to(tl.float32)
            safe_n = tl.where(ok, n_i, 1.0)
            mean_y = s1_i / safe_n
            mean_r = tl.where(ok, m_i, 0.0) + mean_y  # mean z of the row
            m2_r = tl.maximum(s2_i - s1_i * mean_y, 0.0)  # Σ (z − mean_r)² of the row
            n_t = tl.sum(n_i, axis=0)
            mean_t = tl.sum(n_i * mean_r, axis=0) / tl.maximum(n_t, 1.0)
            d = mean_r - mean_t
            m2_t = tl.sum(tl.where(ok, m2_r + n_i * d * d, 0.0), axis=0)
            safe_l = tl.where(l_i > 0, l_i, 1.0)
            ent_r = (tl.log(safe_l) - ey_i / safe_l) * okf  # H = log Σe − Σ e·y / Σe
            multi = n_i >= 2
            frac_r = tl.where(multi, ent_r / tl.log(tl.maximum(n_i, 2.0)), 0.0)
            if HIST_BINS > 0:  # row counts per head in equal bins on [0, 1], as `_Accumulator.add_row_histograms`
                f_bin = tl.minimum((tl.minimum(tl.maximum(frac_r, 0.0), 1.0) * HIST_BINS).to(tl.int32), HIST_BINS - 1)
                tl.atomic_add(hist_ptr + h * HIST_BINS + f_bin, 1, mask=row_in & multi)
                maxp_r = tl.where(ok, 1.0 / safe_l, 0.0)
                p_bin = tl.minimum((tl.minimum(tl.maximum(maxp_r, 0.0), 1.0) * HIST_BINS).to(tl.int32), HIST_BINS - 1)
                tl.atomic_add(hist_ptr + (H + h) * HIST_BINS + p_bin, 1, mask=row_in & ok)
            o = out_ptr + pid_bh.to(tl.int64) * n_tiles + pid_m
            tl.store(o, n_t)
            tl.store(o + fig_stride, mean_t)
            tl.store(o + 2 * fig_stride, m2_t)
            tl.store(o + 3 * fig_stride, tl.min(tl.where(ok, lo_i, inf), axis=0))
            tl.store(o + 4 * fig_stride, tl.max(tl.where(ok, m_i, -inf), axis=0))
            tl.store(o + 5 * fig_stride, tl.sum(ent_r, axis=0))
            tl.store(o + 6 * fig_stride, tl.sum(okf, axis=0))
            tl.store(o + 7 * fig_stride, tl.sum(frac_r, axis=0))
            tl.store(o + 8 * fig_stride, tl.sum(multi.to(tl.float32), axis=0))
            tl.store(o + 9 * fig_stride, tl.sum(okf / safe_l, axis=0))  # the largest probability is 1 / Σe
            tl.store(o + 10 * fig_stride, tl.sum(e0_i / safe_l * okf, axis=0))

    def merge_partials_kernel(
        part_ptr, acc_n, acc_mean, acc_m2, acc_min, acc_max, acc_ent, acc_rows, acc_frac, acc_frac_rows,
        acc_maxp, acc_sink, hist_ptr, acc_hist_frac, acc_hist_maxp, fig_stride, H, n_tiles, R, inv_scale,
        BLOCK: tl.constexpr, HIST_BINS: tl.constexpr, HIST_P2: tl.constexpr,
    ):
        """One program per head: the R = B·n_tiles partials of head h, merged in float64 and folded into
        the accumulator in place (as `_Accumulator.add_moments` and `_merge_rows` do)."""
        h = tl.program_id(0)
        inf = float("inf")
        n_sum = tl.zeros([BLOCK], tl.float64)
        nm_sum = tl.zeros([BLOCK], tl.float64)
        lo_min = tl.full([BLOCK], inf, tl.float64)
        hi_max = tl.full([BLOCK], -inf, tl.float64)
        ent = tl.zeros([BLOCK], tl.float64)
        rows = tl.zeros([BLOCK], tl.float64)
        frac = tl.zeros([BLOCK], tl.float64)
        frac_rows = tl.zeros([BLOCK], tl.float64)
        maxp = tl.zeros([BLOCK], tl.float64)
        sink = tl.zeros([BLOCK], tl.float64)
        for r0 in range(0, R, BLOCK):  # pass 1: counts, mean, extremes, softmax figures
            r = r0 + tl.arange(0, BLOCK)
            inside = r < R
            p = part_ptr + ((r // n_tiles) * H + h) * n_tiles + r % n_tiles
            n = tl.load(p, mask=inside, other=0.0).to(tl.float64)
            n_sum += n
            nm_sum += n * tl.load(p + fig_stride, mask=inside, other=0.0).to(tl.float64)
            lo_min = tl.minimum(lo_min, tl.load(p + 3 * fig_stride, mask=inside, other=inf).to(tl.float64))
            hi_max = tl.maximum(hi_max, tl.load(p + 4 * fig_stride, mask=inside, other=-inf).to(tl.float64))
            ent += tl.load(p + 5 * fig_stride, mask=inside, other=0.0).to(tl.float64)
            rows += tl.load(p + 6 * fig_stride, mask=inside, other=0.0).to(tl.float64)
            frac += tl.load(p + 7 * fig_stride, mask=inside, other=0.0).to(tl.float64)
            frac_rows += tl.load(p + 8 * fig_stride, mask=inside, other=0.0).to(tl.float64)
            maxp += tl.load(p + 9 * fig_stride, mask=inside, other=0.0).to(tl.float64)
            sink += tl.load(p + 10 * fig_stride, mask=inside, other=0.0).to(tl.float64)
        n_head = tl.sum(n_sum, axis=0)
        mean_head = tl.sum(nm_sum, axis=0) / tl.maximum(n_head, 1.0)
        m2_acc = tl.zeros([BLOCK], tl.float64)
        for r0 in range(0, R, BLOCK):  # pass 2: second moment about the head's mean (no cancellation)
            r = r0 + tl.arange(0, BLOCK)
            inside = r < R
            p = part_ptr + ((r // n_tiles) * H + h) * n_tiles + r % n_tiles
            n = tl.load(p, mask=inside, other=0.0).to(tl.float64)
            d = tl.load(p + fig_stride, mask=inside, other=0.0).to(tl.float64) - mean_head
            m2_acc += tl.load(p + 2 * fig_stride, mask=inside, other=0.0).to(tl.float64) + n * d * d
        m2_head = tl.sum(m2_acc, axis=0)
        # fold into the accumulator (unscaled moments; Chan et al. across calls)
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
        tl.store(acc_rows + h, tl.load(acc_rows + h) + tl.sum(rows, axis=0))
        tl.store(acc_frac + h, tl.load(acc_frac + h) + tl.sum(frac, axis=0))
        tl.store(acc_frac_rows + h, tl.load(acc_frac_rows + h) + tl.sum(frac_rows, axis=0))
        tl.store(acc_maxp + h, tl.load(acc_maxp + h) + tl.sum(maxp, axis=0))
        tl.store(acc_sink + h, tl.load(acc_sink + h) + tl.sum(sink, axis=0))
        if HIST_BINS > 0:  # this call's int32 row counts into the float64 histograms
            bins = tl.arange(0, HIST_P2)
            inb = bins < HIST_BINS
            at = h * HIST_BINS + bins
            tl.store(acc_hist_frac + at, tl.load(acc_hist_frac + at, mask=inb, other=0.0)
                     + tl.load(hist_ptr + at, mask=inb, other=0).to(tl.float64), mask=inb)
            tl.store(acc_hist_maxp + at, tl.load(acc_hist_maxp + at, mask=inb, other=0.0)
                     + tl.load(hist_ptr + H * HIST_BINS + at, mask=inb, other=0).to(tl.float64), mask=inb)


_RAW = {"fold_tile": fold_tile, "row_figures_kernel": row_figures_kernel,
        "merge_partials_kernel": merge_partials_kernel} if tl is not None else {}
_WRAPPED: dict = {}


def kernels(interpreting: bool):
    """(row_figures_kernel, merge_partials_kernel), jitted, or interpreted under TRITON_INTERPRET=1.
    The helper `fold_tile` is wrapped the same way and put back in this module's globals, where the
    kernels look it up when they are traced."""
    if interpreting not in _WRAPPED:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction

        wrap = InterpretedFunction if interpreting else JITFunction
        globals()["fold_tile"] = wrap(_RAW["fold_tile"])
        _WRAPPED[interpreting] = (wrap(_RAW["row_figures_kernel"]), wrap(_RAW["merge_partials_kernel"]))
    return _WRAPPED[interpreting]
