#!/usr/bin/env bash
# GPU check of daenr_fast on a machine with a CUDA GPU, torch (CUDA build), triton and nvcc already installed.
# Installs nothing from the network. Every step continues on failure and has its own time cap; the whole run is
# capped at GPU_CHECK_BUDGET_S (default 450 s, under 8 minutes), the most important measurements first:
#
#   environment      nvidia-smi, versions
#   install          pip install --no-deps --no-build-isolation -e .
#   build            compile the C++/CUDA extension of every op that has sources (missing ops are skipped)
#   readout          factorized readout fwd and fwd+bwd at the paper, mid and Sensorium sizes, float32 (the Triton
#                    backend in each precision: tf32x3, ieee, tf32) and bfloat16, against the einsum reference;
#                    the max error of each against float64, and the issue's float32 targets (readout.json)
#   cuda_tests       pytest -m cuda (the test folders with GPU cases): every GPU backend on CUDA tensors, so the
#                    Triton tests on real Triton
#                    (precision modes within their error bounds, every autotuning candidate), DAENR_FAST_EXPECT_COMPILED
#   bench_f32        daenr bench --device cuda, float32, readout/poisson/vq (with the 16M-element Poisson tier)
#   bench_bf16       the same in bfloat16
#   dispatch_table   the GPU dispatch table derived from bench_f32 and bench_bf16 (dispatch_table.json; the
#                    package's daenr_fast/dispatch_table.json is not touched)
#   poisson_host     host overhead per eager Poisson-loss call at 64x103 (poisson_host.json)
#   e2e              daenr bench --ops e2e: CAE-FR2 and the Sensorium readout model, steps/s
#   train_compile    `daenr train` steps/s with and without --compile (only where train has the switch)
#   interpreter      (GPU_CHECK_INTERPRETER=1 only) the Triton tests under TRITON_INTERPRET=1; CPU CI runs them
#
# Every step's output goes to $OUT/NN_step.log; a summary is printed and saved as $OUT/summary.txt.
# Usage: bash benchmarks/gpu_check.sh
# Options (environment): PYTHON (interpreter, default python3), GPU_CHECK_BUDGET_S (total seconds, default 450),
# GPU_CHECK_OUT (results folder, default benchmarks/results/gpu), GPU_CHECK_SKIP_INSTALL=1 (the package is already
# installed), GPU_CHECK_INTERPRETER=1 (add the interpreter step), GPU_CHECK_DRY=1 (check the plumbing on a machine
# without a GPU: CPU tensors, the Triton interpreter, tiny sizes, tests collected but not run, results in
# /tmp/gpu_check_dry unless GPU_CHECK_OUT is set).
set -u
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
if [ "$DRY" = 1 ]; then
  OUT=${GPU_CHECK_OUT:-/tmp/gpu_check_dry}
  DEVICE=cpu
  export TRITON_INTERPRET=1
  BENCH_SIZE=(--sizes tiny --quick)
  READOUT_SIZES="3,5,7,6,17"
  TEST_ONLY=(--collect-only)
  HOST_ARGS=(--calls 3 --repeats 2)
  BF16_OPS=readout,poisson  # torch's cdist takes no bfloat16 on CPU
else
  OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu}
  DEVICE=cuda
  unset TRITON_INTERPRET
  BENCH_SIZE=(--sizes all --max-time 1 --no-compile)
  READOUT_SIZES="32,64,28,56,8000;128,64,16,16,1000;64,48,16,16,103"  # the targets' sizes first
  TEST_ONLY=()
  HOST_ARGS=()
  BF16_OPS=readout,poisson,vq
fi
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)
mkdir -p "$OUT"
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
  local t0
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local dt=$(($(date +%s) - t0))
  local verdict="ok"
  if ((rc == 124 || rc == 137)); then verdict="TIMEOUT"; elif ((rc != 0)); then verdict="FAILED (exit $rc)"; fi
  echo "=== [$NUM] $name: $verdict in ${dt}s" | tee -a "$log"
  SUMMARY+=("$(printf '%-16s %-18s %4ss  %s' "$name" "$verdict" "$dt" "$log")")
}

skip() {  # skip NAME REASON
  NUM=$((NUM + 1))
  SUMMARY+=("$(printf '%-16s SKIPPED (%s)' "$1" "$2")")
}

step environment 30 bash -c "nvidia-smi || echo 'nvidia-smi: no GPU'; command -v nvcc && nvcc --version; $PYTHON -c '
import sys, torch
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"device\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
try:
    import triton; print(\"triton\", triton.__version__)
except ImportError as err:
    print(\"triton: not installed:\", err)
'"

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" = 1 ] || [ "$DRY" = 1 ]; then
  skip install "GPU_CHECK_SKIP_INSTALL=1 or GPU_CHECK_DRY=1"
else
  step install 60 "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi

step build 120 env GPU_CHECK_DEVICE="$DEVICE" "$PYTHON" - <<'EOF'
"""Build every op's extension, the ops in parallel processes, then check that each one has its CUDA kernels."""
import os
import subprocess
import sys

from daenr_fast import _build

OPS = ("factorized_readout", "gaussian_readout", "poisson_loss", "vq_lookup")
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
    if os.environ["GPU_CHECK_DEVICE"] != "cuda":
        print(f"{op}: built (CPU)")
        continue
    ok, why = _build.extension_status(op, cuda=True)
    print(f"{op}: built, CUDA kernels {'available' if ok else 'UNAVAILABLE: ' + why}")
    failed += not ok
sys.exit(1 if failed else 0)
EOF

step readout 150 env READOUT_DEVICE="$DEVICE" READOUT_SIZES="$READOUT_SIZES" "$PYTHON" - "$OUT/readout.json" <<'EOF'
"""Factorized readout per backend and Triton precision: median ms of fwd and fwd+bwd (CUDA events; perf_counter
on CPU), the speed-up over the einsum reference, the largest error of y and every gradient against float64
(relative to the largest |truth|), and the issue's float32 targets for the default precision."""
import json
import os
import sys
import time

import torch

from daenr_fast import _dispatch
from daenr_fast.ops import factorized_readout, reference
from daenr_fast.ops.factorized_readout import FLOAT32_PRECISIONS, set_float32_precision

DEVICE = torch.device(os.environ["READOUT_DEVICE"])
SIZES = [tuple(int(v) for v in s.split(",")) for s in os.environ["READOUT_SIZES"].split(";")]
TARGETS = {(128, 64, 16, 16, 1000): {"fwd": 1.5, "fwd+bwd": 1.2}, (32, 64, 28, 56, 8000): {"fwd": 1.5, "fwd+bwd": 2.0}}
REPS = 20 if DEVICE.type == "cuda" else 2


def timed(fn):
    for _ in range(3):  # warm-up: compiles and autotuning
        fn()
    if DEVICE.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(REPS):
            fn()
        return (time.perf_counter() - t0) / REPS * 1e3
    torch.cuda.synchronize()
    times = []
    for _ in range(REPS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def targets_of(rows):
    """The issue's float32 targets for the default precision, from the rows measured so far."""
    out = []
    for shape, wanted in TARGETS.items():
        row = next((r for r in rows if r["dtype"] == "float32" and tuple(r["shape"]) == shape
                    and r["impl"] == "triton tf32x3"), None)
        for mode, ratio in wanted.items():
            got = None if row is None else row["fwd_speedup" if mode == "fwd" else "fwd_bwd_speedup"]
            verdict = "not measured" if got is None else ("MET" if got >= ratio else "MISSED")
            out.append(dict(shape=list(shape), mode=mode, target=ratio, speedup=got, verdict=verdict))
    return out


def save(rows):
    info = dict(device=torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu", torch=torch.__version__,
                float32_matmul_precision=torch.get_float32_matmul_precision(), rows=rows, targets=targets_of(rows))
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)


def max_error(got, want):
    return max(((g.double() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() for g, w in zip(got, want))


gen = torch.Generator().manual_seed(0)
backends = [b for b in ("cuda", "triton") if _dispatch.backend_status("factorized_readout", b, DEVICE)[0]]
print("device", DEVICE, "backends", backends, flush=True)
rows = []
for dtype in (torch.float32, torch.bfloat16):
    if DEVICE.type == "cpu" and dtype == torch.bfloat16:
        continue  # the interpreter cannot run bfloat16 dots
    for shape in SIZES:
        B, C, H, W, N = shape
        inputs = [torch.randn(s, generator=gen).to(DEVICE, dtype) for s in ((B, C, H, W), (N, H, W), (N, C), (N,))]
        leaves = [t.clone().requires_grad_() for t in inputs]
        gy = torch.randn(B, N, generator=gen).to(DEVICE, dtype)
        wide = [t.double().requires_grad_() for t in inputs]
        y64 = reference.factorized_readout(*wide)
        truth = [y64.detach(), *torch.autograd.grad(y64, wide, gy.double())]
        del y64, wide
        variants = [("einsum", None, None)] + [(b, None, None) for b in backends if b != "triton"]
        if "triton" in backends:
            variants += [("triton", p, p) for p in (FLOAT32_PRECISIONS if dtype == torch.float32 else (None,))]
        base = {}
        for name, precision, label in variants:
            set_float32_precision(precision)
            if name == "einsum":
                call = lambda *a: reference.factorized_readout(*a)  # noqa: E731
            else:
                call = lambda *a, _b=name: factorized_readout(*a, backend=_b)  # noqa: E731
            y = call(*leaves)
            error = max_error([y.detach(), *torch.autograd.grad(y, leaves, gy)], truth)
            with torch.no_grad():
                fwd = timed(lambda: call(*inputs))
            both = timed(lambda: torch.autograd.grad(call(*leaves), leaves, gy))
            if name == "einsum":
                base = {"fwd": fwd, "fwd+bwd": both}
            row = dict(dtype=str(dtype).split(".")[-1], shape=list(shape), impl=name + (f" {label}" if label else ""),
                       precision=precision, fwd_ms=fwd, fwd_bwd_ms=both, fwd_speedup=base["fwd"] / fwd,
                       fwd_bwd_speedup=base["fwd+bwd"] / both, max_rel_error=error)
            rows.append(row)
            save(rows)
            print(f"{row['dtype']:9s} {str(shape):26s} {row['impl']:14s} fwd {fwd:8.3f} ms ({row['fwd_speedup']:5.2f}x)"
                  f"  fwd+bwd {both:8.3f} ms ({row['fwd_bwd_speedup']:5.2f}x)  max rel err {error:.2e}", flush=True)
        set_float32_precision(None)
        del inputs, leaves, truth
for t in targets_of(rows):
    got = "-" if t["speedup"] is None else f"{t['speedup']:.2f}x"
    print(f"target float32 {tuple(t['shape'])} {t['mode']}: triton tf32x3 >= {t['target']}x the einsum: {got} "
          f"{t['verdict']}")
EOF

XDIST=()  # pytest-xdist, where installed, spreads the tests (and Triton's compiles) over 8 processes
[ "$DRY" = 1 ] || { "$PYTHON" -c "import xdist" 2>/dev/null && XDIST=(-n 8); }
CUDA_TEST_PATHS=(tests/ops tests/nn tests/fuzz tests/bench tests/test_build.py tests/test_dispatch.py)  # every cuda mark
step cuda_tests 150 env DAENR_FAST_EXPECT_COMPILED=1 "$PYTHON" -m pytest "${CUDA_TEST_PATHS[@]}" -m cuda "${XDIST[@]}" \
  --continue-on-collection-errors \
  "${TEST_ONLY[@]}" -q -rfEs -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"

step bench_f32 100 "$PYTHON" -m daenr_fast.cli bench --device "$DEVICE" --ops readout,poisson,vq "${BENCH_SIZE[@]}" \
  --out "$OUT/bench"
step bench_bf16 70 "$PYTHON" -m daenr_fast.cli bench --device "$DEVICE" --ops "$BF16_OPS" --dtype bfloat16 \
  "${BENCH_SIZE[@]}" --no-compile --out "$OUT/bench_bf16"

if [ "$DRY" = 1 ]; then
  TABLE_FROM=(benchmarks/results/gpu/bench benchmarks/results/gpu/bench_bf16)  # CPU results derive nothing
else
  TABLE_FROM=("$OUT/bench" "$OUT/bench_bf16")
fi
step dispatch_table 30 "$PYTHON" -m daenr_fast.dispatch_table "${TABLE_FROM[@]}" --out "$OUT/dispatch_table.json"

step poisson_host 30 "$PYTHON" -c "from daenr_fast.bench import poisson; poisson.main()" --device "$DEVICE" \
  "${HOST_ARGS[@]}" --out "$OUT/poisson_host.json"

step e2e 60 "$PYTHON" -m daenr_fast.cli bench --device "$DEVICE" --ops e2e "${BENCH_SIZE[@]}" --out "$OUT/bench_e2e"

if "$PYTHON" -m daenr_fast.cli train --help 2>/dev/null | grep -q -- "--compile"; then
  step train_compile 120 env TRAIN_DEVICE="$DEVICE" "$PYTHON" - "$OUT/train_compile.json" <<'EOF'
"""`daenr train` of CAE-FR2 at batch 64 with and without --compile, each for a short and a long run: steps per
second of the training loop (metrics.json: steps / train_seconds, compilation included), and the steady rate
from the difference of the two runs, (long - short) steps / (long - short) seconds, which leaves the compilation
and the start-up out (the compiled runs' evaluation steps run eager)."""
import json
import os
import subprocess
import sys
import tempfile
import time

LENGTHS = (100, 500) if os.environ["TRAIN_DEVICE"] == "cuda" else (2, 4)
rows = []
for flags, STEPS in [(f, n) for f in ([], ["--compile"]) for n in LENGTHS]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "daenr_fast.cli", "train", "--model", "cae-fr", "--layer", "2",
               "--batch-size", "64", "--max-steps", str(STEPS), "--eval-every", str(STEPS), "--checkpoint-every",
               str(STEPS), "--device", os.environ["TRAIN_DEVICE"], "--out", out, "--no-progress", "--no-figures",
               *flags]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(" ".join(cmd), f"-> exit {proc.returncode} in {wall:.1f}s", flush=True)
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            rows.append(dict(flags=flags, exit=proc.returncode, wall_s=wall))
            continue
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
            run = json.load(f)["run"]
        rows.append(dict(flags=flags, exit=0, steps=run["steps"], train_seconds=run["train_seconds"],
                         steps_per_s=run["steps"] / run["train_seconds"], wall_s=wall))
        print(f"  {' '.join(flags) or 'eager':10s} {rows[-1]['steps_per_s']:8.1f} steps/s "
              f"({run['steps']} steps in {run['train_seconds']:.2f} s)", flush=True)
steady = {}
for flags in ([], ["--compile"]):
    short, long = (next((r for r in rows if r["flags"] == flags and r.get("steps") == n), None) for n in LENGTHS)
    if short and long and long["train_seconds"] > short["train_seconds"]:
        steady[" ".join(flags) or "eager"] = (long["steps"] - short["steps"]) / (long["train_seconds"]
                                                                           - short["train_seconds"])
for name, rate in steady.items():
    print(f"steady {name}: {rate:.1f} steps/s ({1e3 / rate:.2f} ms a step)")
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(dict(rows=rows, steady_steps_per_s=steady), f, indent=1)
sys.exit(max(r["exit"] for r in rows))
EOF
else
  skip train_compile "daenr train has no --compile"
fi

if [ "${GPU_CHECK_INTERPRETER:-0}" = 1 ]; then
  step interpreter 120 env TRITON_INTERPRET=1 "$PYTHON" -m pytest tests/ops -m "triton and not cuda" "${XDIST[@]}" \
    "${TEST_ONLY[@]}" -q -rfEs -p no:cacheprovider --junitxml="$OUT/interpreter_tests.xml"
else
  skip interpreter "GPU_CHECK_INTERPRETER unset; CPU CI runs these"
fi

{
  echo "GPU check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START))s in all, budget ${BUDGET}s)"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
} | tee "$OUT/summary.txt"
