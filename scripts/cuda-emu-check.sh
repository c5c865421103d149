#!/usr/bin/env bash
# The CUDA backend's tests on the CPU through the emulator (tools/cuda_emu), for machines without
# a GPU: configures build-emu (CPU-only libraries, -DKILN_CUDA_EMULATION=ON), builds
# kiln_cuda_emu_tests and runs it. Extra arguments go to the test binary, e.g.
#   scripts/cuda-emu-check.sh --gtest_filter='CudaKda*'
# Environment: JOBS (build parallelism, default 2), KILN_EMU_WORKERS (OS threads that run blocks,
# default all hardware threads), KILN_EMU_TRACE=1 (print every kernel launch, and at exit each
# kernel's largest block and shared memory against the target's limits). About 6 minutes on
# 2 cores, most of it in the whole-model tests.
# Without arguments it also checks the GPU tests' skip rule (tests/cuda/cuda_test_util.h) in
# processes of their own: with no device (KILN_EMU_DEVICES=0) they skip, exit 77; with a device
# whose context cannot start (KILN_EMU_FAIL=cublas or stream) they fail with the error, never skip.
# Exit status: 0 when the test binary and these checks passed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-emu
cmake -S . -B "$build" -DKILN_WITH_CUDA=OFF -DKILN_CUDA_EMULATION=ON -DKILN_WITH_MPI=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target kiln_cuda_emu_tests
t0=$(date +%s)
status=0
"$build/tools/cuda_emu/kiln_cuda_emu_tests" "$@" || status=$?
# expect NAME STATUS TEXT [ENV=VALUE...] -- GTEST_FILTER: the test binary run with ENV on the
# filtered tests exits with STATUS (\"fail\": any status but 0 and 77, e.g. a failed test or a
# check's abort) and prints TEXT.
expect() {
  local name=$1 want=$2 text=$3
  shift 3
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  local out rc=0
  out=$(env "${envs[@]}" "$build/tools/cuda_emu/kiln_cuda_emu_tests" --gtest_filter="$2" 2>&1) \
    || rc=$?
  local ok=yes
  if [ "$want" = fail ]; then
    { [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; } || ok=no
  else
    [ "$rc" -eq "$want" ] || ok=no
  fi
  if [ "$ok" = no ] || ! grep -qF -- "$text" <<<"$out"; then
    printf '%s\n' "$out" | tail -n 30
    echo "cuda-emu-check: $name: exit $rc (want $want) or no \"$text\" in the output"
    status=1
  else
    echo "cuda-emu-check: $name: exit $rc, \"$text\""
  fi
}
if [ $# -eq 0 ]; then
  # No device: Context::create's error names it; the tests skip (77) and say why.
  expect "no device, CudaBuild" 0 "PASSED" KILN_EMU_DEVICES=0 -- 'CudaBuild.*'
  expect "no device, GPU tests" 77 "GPU test not run: no CUDA device is visible" \
    KILN_EMU_DEVICES=0 -- 'CudaElementwise.*:CudaNorm.RmsNormAndFusedAdd:GpuModel.StateOn*'
  # A device that cannot be used: every GPU test fails with the reason, none skips.
  for what in cublas stream; do
    expect "device with failing $what" 1 "GPU test context could not be created" \
      KILN_EMU_FAIL=$what -- 'CudaElementwise.*:CudaNorm.RmsNormAndFusedAdd:GpuModel.StateOn*'
  done
  expect "device with failing cublas, CudaBuild" 1 "cuBLAS could not start" \
    KILN_EMU_FAIL=cublas -- 'CudaBuild.*'
  expect "device with failing allocations" fail "out of device memory" \
    KILN_EMU_FAIL=malloc -- 'CudaElementwise.*'
fi
echo "cuda-emu-check: kiln_cuda_emu_tests exit status $status after $(( $(date +%s) - t0 )) s"
exit "$status"
