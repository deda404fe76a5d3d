#!/bin/bash
# `make gpu-test`: everything a session with a GPU should run, in one go (GPU time is scarce). Every
# step runs even when an earlier one failed, so one failure does not hide the others; the summary at
# the end names the failed steps and the exit status is 1 if there were any. When the wgmma probe
# fails on this GPU (the emulator's reading of wgmma is not the hardware's), the steps after it run
# with the wgmma kernel turned off (INR_FAST_WGMMA=0), so the mma.sync kernel is still checked.
# Environment (set by the Makefile): PYTHON, GPU_ARCH, SANITIZER, GPU_TESTS.
set -u
PY=${PYTHON:-python3}
failed=()
step() {
  local name=$1
  shift
  echo "=== gpu-test: $name"
  if "$@"; then
    echo "=== gpu-test: $name: ok"
  else
    echo "=== gpu-test: $name: FAILED"
    failed+=("$name")
    return 1
  fi
}
summary() {
  if [ ${#failed[@]} -eq 0 ]; then
    echo "=== gpu-test: every step passed"
  else
    echo "=== gpu-test: FAILED steps: ${failed[*]}"
  fi
}

step machine "$PY" csrc/tests/gpu_report.py
nvcc --version 2>/dev/null | tail -n 2
if ! step build env INR_FAST_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${GPU_ARCH:-9.0a}" "$PY" setup.py --quiet build_ext --inplace; then
  summary
  exit 1
fi
if ! step wgmma-probe "$PY" -m pytest -q -m gpu tests/test_wgmma_probe.py -k probe_matches_float64; then
  export INR_FAST_WGMMA=0
  echo "=== gpu-test: the wgmma kernel is turned off (INR_FAST_WGMMA=0) for the remaining steps"
fi
# shellcheck disable=SC2086  # GPU_TESTS is a list of paths
step gpu-tests "$PY" -m pytest -q -m gpu ${GPU_TESTS:-tests}
SAN=${SANITIZER:-compute-sanitizer}
step memcheck "$SAN" --tool memcheck --error-exitcode 1 "$PY" csrc/tests/gpu_smoke.py
step racecheck "$SAN" --tool racecheck --error-exitcode 1 "$PY" csrc/tests/gpu_smoke.py --small
step synccheck "$SAN" --tool synccheck --error-exitcode 1 "$PY" csrc/tests/gpu_smoke.py --small
step synchronised-launches env INR_FAST_CUDA_SYNC=1 "$PY" csrc/tests/gpu_smoke.py
mkdir -p benchmarks/results
step benchmarks "$PY" -m pytest -q benchmarks --benchmark-only --benchmark-json=benchmarks/results/gpu.json -m gpu
step benchmark-report "$PY" csrc/tests/gpu_report.py benchmarks/results/gpu.json
summary
[ ${#failed[@]} -eq 0 ]
