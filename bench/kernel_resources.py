"""Compile the fused attention-statistics kernels for a CUDA GPU without one, and print what each takes.

Triton compiles ahead of time for a named target (here sm_90, H100/H200, and sm_80, A100) with its own
bundled ptxas, on any machine. This prints, per input type and head width (the worst of the four mask
variants: causal, causal with padding, bidirectional with padding, sliding window) and for other
tiles of the benchmark's shape: registers per thread,
spilled bytes (local memory and stack frame; 0 is what we want), shared memory, and the occupancy the registers allow
(resident warps per SM out of 64). These are compile-time facts, not GPU measurements: timing needs
`bench_capture.py --cuda-suite` on a real GPU.

    python bench/kernel_resources.py            # the table, in a few tens of seconds
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _util  # noqa: E402

from inspector import fused_kernels, fused_stats  # noqa: E402

VARIANTS = {  # name: (CAUSAL, HAS_WINDOW, HAS_KV, HAS_QV)
    "causal": (True, False, False, False),
    "causal, padded": (True, False, True, True),
    "bidirectional, padded": (False, False, True, True),
    "sliding window": (True, True, False, False),
}
_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
# Other tiles for bf16, d = 64 (GPT-2, BERT, SmolLM2), timed beside the default by bench_capture.py --cuda-suite.
ALTERNATIVE_TILES = [((128, 64), 8), ((64, 64), 8), ((64, 32), 8), ((64, 32), 4), ((32, 32), 4)]


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def available() -> str | None:
    """None when kernels can be compiled here for sm_90, else why not."""
    if fused_stats.triton is None:
        return "triton is not importable"
    if fused_stats._interpreting():
        return "TRITON_INTERPRET=1 is set: Triton compiles nothing in this process"
    if not _cuobjdump().exists():
        return f"no cuobjdump in Triton's NVIDIA backend ({_cuobjdump()})"
    return None


def _resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([str(_cuobjdump()), "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k.lower(): int(v) for k, v in found.items()}


def _compile(fn, signature: dict, constexprs: dict, arch: int, warps: int, stages: int, aligned=()):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning
    sig = dict(signature, **{k: "constexpr" for k in constexprs})
    # the JIT marks pointers and integers that are multiples of 16 ("tt.divisibility") and compiles for those
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})


# What the JIT sees at GPT-2-small 8×1024 (q, k: views of the fused qkv projection, strides
# (T·2304, 64, 2304, 1)): aligned pointers, and these integer arguments multiples of 16.
GPT2_ALIGNED = ("q_ptr", "k_ptr", "out_ptr", "kv_ptr", "qv_ptr", "first_ptr", "stride_qb", "stride_qh", "stride_qm",
                "stride_kb", "stride_kh", "stride_kn", "Tq", "Tk", "D", "fig_stride")


def compile_row_kernel(variant: str = "causal", dtype=torch.bfloat16, d: int = 64, block=None, warps=None,
                       arch: int = 90, stages: int = 2, aligned=(), hist_bins: int = 0) -> dict[str, int]:
    """Compile the row-figures kernel (partials epilogue, as the capture launches it) and return its
    resources: reg, local (spilled bytes), shared, stack; plus block_m, block_n, warps.
    `aligned`: argument names compiled as multiples of 16, as the JIT specialises them at run time;
    `hist_bins` > 0: the variant that also counts the row histograms (the corpus job's)."""
    import triton

    bm, bn, w = fused_stats._tiles(d, torch.device("cuda"), dtype)
    bm, bn = block or (bm, bn)
    warps = warps or w
    row_kernel, _ = fused_kernels.kernels(False)
    causal, window, kv, qv = VARIANTS[variant]
    ptr = "*" + _TYPES[dtype]
    constexprs = dict(CAUSAL=causal, HAS_WINDOW=window, HAS_KV=kv, HAS_QV=qv, BLOCK_M=bm, BLOCK_N=bn,
                      BLOCK_D=max(16, triton.next_power_of_2(d)), IEEE=dtype == torch.float32, UPCAST=False,
                      ROWS_OUT=False, HIST_BINS=hist_bins)
    signature = {}
    for name in row_kernel.arg_names:
        if name in ("q_ptr", "k_ptr"):
            signature[name] = ptr
        elif name == "out_ptr":
            signature[name] = "*fp32"
        elif name in ("kv_ptr", "qv_ptr"):
            signature[name] = "*i8"
        elif name in ("first_ptr", "hist_ptr"):
            signature[name] = "*i32"
        elif name == "scale":
            signature[name] = "fp32"
        elif name not in constexprs:
            signature[name] = "i32"
    compiled = _compile(row_kernel, signature, constexprs, arch, warps, stages, aligned)
    return dict(_resources(compiled.asm["cubin"]), block_m=bm, block_n=bn, warps=warps)


def compile_merge_kernel(arch: int = 90, block: int = fused_stats.MERGE_BLOCK_MAX, hist_bins: int = 0) -> dict[str, int]:
    import triton

    _, merge_kernel = fused_kernels.kernels(False)
    constexprs = {"BLOCK": block, "HIST_BINS": hist_bins, "HIST_P2": triton.next_power_of_2(max(hist_bins, 1))}
    signature = {name: ("*fp32" if name == "part_ptr" else "*i32" if name == "hist_ptr" else
                        "*fp64" if name.startswith("acc_") else "fp64" if name == "inv_scale" else "i32")
                 for name in merge_kernel.arg_names if name not in constexprs}
    compiled = _compile(merge_kernel, signature, constexprs, arch, 4, 1)
    return dict(_resources(compiled.asm["cubin"]), warps=4)


def occupancy(regs: int, warps: int) -> int:
    """Resident warps per SM (of 64) that the registers allow: 64 K registers per SM, allocated per warp
    in units of 256, whole blocks only (sm_80 / sm_90)."""
    per_warp = -(-regs * 32 // 256) * 256
    blocks = 65536 // (per_warp * warps)
    return min(64, blocks * warps)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="accepted for run_all.py; the run is short anyway")
    ap.add_argument("--threads", type=int, default=None, help="accepted for run_all.py; unused")
    ap.parse_args()
    why = available()
    if why:
        raise SystemExit(f"cannot compile here: {why}")
    import triton

    rows = []
    for arch in (90, 80):
        classes = [(dt, d) for dt in (torch.bfloat16, torch.float16, torch.float32) for d in (64, 128, 256)]
        for dtype, d in classes if arch == 90 else classes[:1]:
            worst = max((compile_row_kernel(v, dtype, d, arch=arch) for v in VARIANTS),
                        key=lambda r: (r["local"] + r["stack"], r["reg"]))
            rows.append([f"sm_{arch}", "row figures + partials", "worst of 4", _TYPES[dtype], d,
                         f"{worst['block_m']}×{worst['block_n']} (default)", worst["warps"], worst["reg"],
                         worst["local"] + worst["stack"], worst["shared"], occupancy(worst["reg"], worst["warps"])])
        if arch == 90:
            for block, warps in ALTERNATIVE_TILES:
                r = compile_row_kernel("causal", torch.bfloat16, 64, block, warps, arch)
                rows.append([f"sm_{arch}", "row figures + partials", "causal", "bf16", 64, f"{block[0]}×{block[1]}",
                             warps, r["reg"], r["local"] + r["stack"], r["shared"], occupancy(r["reg"], warps)])
        m = compile_merge_kernel(arch)
        rows.append([f"sm_{arch}", "merge (float64)", "–", "fp32 → fp64", "–", str(fused_stats.MERGE_BLOCK_MAX),
                     m["warps"], m["reg"], m["local"] + m["stack"], m["shared"], occupancy(m["reg"], m["warps"])])
    print(_util.header("Fused kernel resources, compiled ahead of time (bench/kernel_resources.py)", torch.device("cpu"),
                       f"triton {triton.__version__} · its bundled ptxas · compile-time figures, no GPU involved"))
    print()
    print(_util.table(["target", "kernel", "mask", "inputs", "d", "tile (M×N)", "warps", "registers/thread",
                       "spilled bytes", "shared bytes", "warps/SM (of 64)"], rows))


if __name__ == "__main__":
    main()
