#!/usr/bin/env bash
# The CUDA backend's tests on the CPU through the emulator (tools/cuda_emu), for machines without
# a GPU: configures build-emu (CPU-only libraries, -DKILN_CUDA_EMULATION=ON), builds
# kiln_cuda_emu_tests and runs it. Extra arguments go to the test binary, e.g.
#   scripts/cuda-emu-check.sh --gtest_filter='CudaKda*'
# Environment: JOBS (build parallelism, default 2), KILN_EMU_WORKERS (OS threads that run blocks,
# default all hardware threads), KILN_EMU_TRACE=1 (print every kernel launch, and at exit each
# kernel's largest block and shared memory against the target's limits). About 6 minutes on
# 2 cores, most of it in the whole-model tests.
# Exit status: the test binary's.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-emu
cmake -S . -B "$build" -DKILN_WITH_CUDA=OFF -DKILN_CUDA_EMULATION=ON -DKILN_WITH_MPI=OFF \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target kiln_cuda_emu_tests
t0=$(date +%s)
status=0
"$build/tools/cuda_emu/kiln_cuda_emu_tests" "$@" || status=$?
# The no-device paths (Context::create's error), which need a process that sees no GPU.
if [ $# -eq 0 ]; then
  KILN_EMU_DEVICES=0 "$build/tools/cuda_emu/kiln_cuda_emu_tests" --gtest_filter='CudaBuild.*' \
    || status=$?
fi
echo "cuda-emu-check: kiln_cuda_emu_tests exit status $status after $(( $(date +%s) - t0 )) s"
exit "$status"
