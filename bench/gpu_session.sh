#!/usr/bin/env bash
# Everything this project measures on a CUDA GPU, in one command (for the device tool's single call:
# under 10 minutes by construction, timeouts 150 s + 420 s; a few minutes expected on an H200, kernel
# compilation included). Tables and logs go to $OUT (the device tool's folder) or bench/gpu-out. Uses the machine's own python3 (its CUDA torch and Triton); the
# repository needs nothing installed beyond what a CUDA image with transformers has.
#
#     bash bench/gpu_session.sh          # then paste $OUT/cuda_suite.md into bench/RESULTS.md
set -u -o pipefail
OUT=${OUT:-bench/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 HF_HUB_OFFLINE=1  # nothing can be fetched there
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import sys, torch, triton, transformers; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/versions.txt"

# 1. correctness of the compiled kernels on the GPU against the torch path (about a minute)
timeout 150 $PY -m pytest -q -p no:cacheprovider -x tests/unit/test_fused_cuda.py 2>&1 | tail -25 \
  | tee "$OUT/fused_cuda_tests.txt"

# 2. the benchmark: per-call tile table, whole-forward time and memory ratios, checks
timeout 420 $PY bench/bench_capture.py --cuda-suite 2>&1 | tee "$OUT/cuda_suite.md"
