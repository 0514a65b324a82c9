"""The fused kernels compile for the GPUs the product targets, on this GPU-less machine.

Triton's interpreter (test_fused_stats.py) checks what the kernels compute, but it runs Python on
numpy arrays: a kernel can pass there and still fail to compile (an argument of the wrong kind, a
branch whose two sides yield different types, ...) or spill registers to local memory on a real GPU.
Here each kernel variant the capture launches is compiled ahead of time for sm_90 (H100/H200) with
Triton's bundled ptxas, and its cubin's resource use is read back with cuobjdump. CI runs the Triton
that requirements-dev.txt installs (3.9); the same file passes with Triton 3.6, what a torch 2.11 CUDA
build brings (run it with PYTHONPATH pointing at a `pip install --target DIR --no-deps triton==3.6.0`).
"""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import kernel_resources  # noqa: E402

WHY_NOT = kernel_resources.available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"cannot compile for a GPU here: {WHY_NOT}")


# Every tile choice of `fused_stats._tiles` (16-bit or fp32 inputs × head width up to 64 / 128 / 256),
# with the two mask variants that need the most registers, and the unpadded causal one the benchmark runs.
CASES = [(v, dt, d) for dt in (torch.bfloat16, torch.float32) for d in (64, 128, 256)
         for v in ("causal, padded", "sliding window")] + [("causal", torch.bfloat16, 64), ("causal", torch.float16, 64)]


@pytest.mark.parametrize("variant, dtype, d", CASES)
def test_row_kernel_compiles_for_sm90_without_spills(variant, dtype, d):
    r = kernel_resources.compile_row_kernel(variant, dtype, d, arch=90)
    assert r["local"] == 0 and r["stack"] == 0, r  # nothing spilled to local memory / the stack
    assert 0 < r["reg"] <= 255, r


def test_row_kernel_compiles_as_the_jit_specialises_it():
    """At GPT-2-small 8×1024 the JIT compiles a variant with its pointers and most integers marked as
    multiples of 16 (vectorised loads): that one too compiles without spills."""
    r = kernel_resources.compile_row_kernel("causal", torch.bfloat16, 64, arch=90,
                                            aligned=kernel_resources.GPT2_ALIGNED)
    assert r["local"] == 0 and r["stack"] == 0 and 0 < r["reg"] <= 255, r


def test_merge_kernel_compiles_for_sm90():
    r = kernel_resources.compile_merge_kernel(arch=90)
    assert r["local"] == 0 and 0 < r["reg"] <= 255, r


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_histogram_variants_compile_for_sm90_without_spills(dtype):
    """The corpus job's variant: the row kernel also counts rows into 10 bins with int32 atomics."""
    r = kernel_resources.compile_row_kernel("causal, padded", dtype, 64, arch=90, hist_bins=10)
    assert r["local"] == 0 and r["stack"] == 0 and 0 < r["reg"] <= 255, r
    m = kernel_resources.compile_merge_kernel(arch=90, hist_bins=10)
    assert m["local"] == 0 and m["stack"] == 0, m


def test_occupancy_arithmetic():
    """Hand-worked: 244 registers → 7,808 per warp rounded up to 8,192; 65,536 / (8,192 × 8 warps) = 1 block."""
    assert kernel_resources.occupancy(244, 8) == 8
    assert kernel_resources.occupancy(139, 4) == 12  # 4,608 per warp → 3 blocks of 4 warps
    assert kernel_resources.occupancy(32, 4) == 64  # capped at 64 warps per SM
