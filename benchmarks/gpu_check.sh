#!/usr/bin/env bash
# GPU check of daenr_fast on a machine with a CUDA GPU, torch (CUDA build), triton and nvcc already installed.
# Installs nothing from the network. Steps (each continues on failure and has a time cap; steps 1-4 and 6-8 took
# about 4 minutes on one H200):
#
#   1. environment     nvidia-smi, versions
#   2. install         pip install --no-deps --no-build-isolation -e .
#   3. build           compile the C++/CUDA extension of every op that has sources (missing ops are skipped)
#   4. op tests        pytest tests/ops: every backend, torch/cpu on CPU tensors and cuda/triton on CUDA tensors
#                      (no TRITON_INTERPRET, so Triton runs compiled; DAENR_FAST_EXPECT_COMPILED=1)
#   5. triton tests    pytest tests/ops -m "triton and not cuda" under TRITON_INTERPRET=1 (the Triton backend
#                      through the interpreter, on CPU tensors)
#   6. benchmark       `daenr bench --device cuda` (float32, every op and end to end, with torch.compile rows)
#   7. bench bf16      `daenr bench --device cuda --dtype bfloat16` for the three ops (no torch.compile rows)
#   8. readout timing  factorized readout fwd and fwd+bwd, float32 and bfloat16: torch vs cuda vs triton
#
# Every step's output goes to benchmarks/results/gpu/NN_step.log; a summary is printed and saved as summary.txt.
# Usage: bash benchmarks/gpu_check.sh
# Options (environment): PYTHON (interpreter, default python3), GPU_CHECK_BUDGET_S (total seconds, default 470),
# GPU_CHECK_OUT (results folder), GPU_CHECK_SKIP_INSTALL=1 (the package is already installed),
# GPU_CHECK_SKIP_INTERPRETER=1 (skip step 5, which CPU CI also runs).
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
mkdir -p "$OUT"
unset TRITON_INTERPRET
SUMMARY=()
NUM=0

# step NAME CAP_SECONDS COMMAND...: run COMMAND with a timeout of min(CAP, time left), tee its output to a log.
step() {
  local name=$1 cap=$2
  shift 2
  NUM=$((NUM + 1))
  local log
  log=$(printf "%s/%02d_%s.log" "$OUT" "$NUM" "$name")
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    echo "skipped: time budget of ${BUDGET}s spent" | tee "$log"
    SUMMARY+=("$(printf '%-16s SKIPPED (time budget)' "$name")")
    return
  fi
  echo "=== [$NUM] $name (limit ${limit}s): $*" | tee "$log"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local dt=$(($(date +%s) - t0))
  local verdict="ok"
  if ((rc == 124 || rc == 137)); then verdict="TIMEOUT"; elif ((rc != 0)); then verdict="FAILED (exit $rc)"; fi
  echo "=== [$NUM] $name: $verdict in ${dt}s" | tee -a "$log"
  SUMMARY+=("$(printf '%-16s %-18s %4ss  %s' "$name" "$verdict" "$dt" "$log")")
}

step environment 30 bash -c "nvidia-smi; command -v nvcc && nvcc --version; $PYTHON -c '
import sys, torch
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"device\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
try:
    import triton; print(\"triton\", triton.__version__)
except ImportError as err:
    print(\"triton: not installed:\", err)
'"

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" = 1 ]; then
  NUM=$((NUM + 1))
  SUMMARY+=("$(printf '%-16s SKIPPED (GPU_CHECK_SKIP_INSTALL=1)' install)")
else
  step install 90 "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi

step build 180 "$PYTHON" - <<'EOF'
"""Build every op's extension, the ops in parallel processes, then check that each one has its CUDA kernels."""
import subprocess
import sys

from daenr_fast import _build

OPS = ("factorized_readout", "poisson_loss", "vq_lookup")
BUILD = "import sys; from daenr_fast import _build; _build.load_extension(sys.argv[1], verbose=True)"
procs = {op: subprocess.Popen([sys.executable, "-c", BUILD, op]) for op in OPS}
codes = {op: proc.wait() for op, proc in procs.items()}
failed = 0
for op in OPS:
    try:
        _build.load_extension(op)
    except _build.ExtensionUnavailable as err:
        if "source files missing" in str(err):
            print(f"{op}: skipped ({err})")
            continue
        failed += 1
        print(f"{op}: FAILED (build exit {codes[op]}): {err}")
        continue
    ok, why = _build.extension_status(op, cuda=True)
    print(f"{op}: built, CUDA kernels {'available' if ok else 'UNAVAILABLE: ' + why}")
    failed += not ok
sys.exit(1 if failed else 0)
EOF

# One process runs the op tests of every backend; the interpreter (TRITON_INTERPRET=1 is read once per process)
# gets a process of its own.
XDIST=()  # pytest-xdist, where installed, spreads the tests (and Triton's compiles) over 4 processes
"$PYTHON" -c "import xdist" 2>/dev/null && XDIST=(-n 4)
step op_tests 240 env DAENR_FAST_EXPECT_COMPILED=1 "$PYTHON" -m pytest tests/ops "${XDIST[@]}" -q -rfEs \
  -p no:cacheprovider --junitxml="$OUT/op_tests.xml"

if [ "${GPU_CHECK_SKIP_INTERPRETER:-0}" = 1 ]; then
  NUM=$((NUM + 1))
  SUMMARY+=("$(printf '%-16s SKIPPED (GPU_CHECK_SKIP_INTERPRETER=1)' triton_tests)")
else
  step triton_tests 120 env TRITON_INTERPRET=1 "$PYTHON" -m pytest tests/ops -m "triton and not cuda" "${XDIST[@]}" \
    -q -rfEs -p no:cacheprovider --junitxml="$OUT/triton_tests.xml"
fi


step benchmark 240 "$PYTHON" -m daenr_fast.cli bench --device cuda --max-time 3 --out "$OUT/bench"
step bench_bf16 120 "$PYTHON" -m daenr_fast.cli bench --device cuda --ops readout,poisson,vq --dtype bfloat16 \
  --no-compile --max-time 2 --out "$OUT/bench_bf16"

step readout_timing 90 "$PYTHON" - "$OUT/readout_timing.json" <<'EOF'
"""Median time per call of the factorized readout on this GPU, forward and forward+backward, per backend."""
import json
import sys

import torch

from daenr_fast import _dispatch
from daenr_fast.ops import factorized_readout

SIZES = [(64, 48, 16, 16, 103), (128, 64, 16, 16, 1000), (32, 64, 28, 56, 8000)]  # (B, C, H, W, N)


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


rows = []
backends = [b for b in ("torch", "cuda", "triton") if _dispatch.backend_status("factorized_readout", b,
                                                                                torch.device("cuda"))[0]]
print("backends:", backends)
for dtype in (torch.float32, torch.bfloat16):
    for B, C, H, W, N in SIZES:
        x = torch.randn(B, C, H, W, device="cuda", dtype=dtype, requires_grad=True)
        m = torch.randn(N, H, W, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.randn(N, C, device="cuda", dtype=dtype, requires_grad=True)
        b = torch.randn(N, device="cuda", dtype=dtype, requires_grad=True)
        gy = torch.randn(B, N, device="cuda", dtype=dtype)
        flops = 2.0 * B * C * H * W * N
        for backend in backends:
            with torch.no_grad():
                fwd = timed(lambda: factorized_readout(x, m, w, b, backend=backend))
            both = timed(lambda: torch.autograd.grad(factorized_readout(x, m, w, b, backend=backend),
                                                     (x, m, w, b), gy))
            row = dict(dtype=str(dtype).split(".")[-1], shape=[B, C, H, W, N], backend=backend, fwd_ms=fwd,
                       fwd_bwd_ms=both, fwd_tflops=flops / fwd / 1e9, fwd_bwd_tflops=4 * flops / both / 1e9)
            rows.append(row)
            print(f"{row['dtype']:9s} {str((B, C, H, W, N)):26s} {backend:7s} fwd {fwd:8.3f} ms "
                  f"({row['fwd_tflops']:6.1f} TFLOP/s)   fwd+bwd {both:8.3f} ms ({row['fwd_bwd_tflops']:6.1f} TFLOP/s)",
                  flush=True)
            with open(sys.argv[1], "w", encoding="utf-8") as f:
                json.dump(dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, rows=rows), f, indent=1)
EOF

{
  echo "GPU check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START))s in all)"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
} | tee "$OUT/summary.txt"
