#!/usr/bin/env bash
# Fresh machine → every test passing: installs dependencies, builds with warnings as errors,
# runs the whole ctest suite (labels: unit, parity, mpi, http, hostile; gpu tests report "skipped" without
# a GPU), then the CUDA backend's gpu tests on the CPU through the emulator (tools/cuda_emu) where
# the CUDA toolkit's headers are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DKILN_BUILD_TESTS=ON -DKILN_WERROR=ON
scripts/python-env.sh   # the openai client for the HTTP tests, in build/pyenv
ctest --test-dir build --output-on-failure -j "$(nproc)"
if [[ -e /usr/local/cuda/include/cuda_runtime_api.h || -n "${CUDA_HOME:-}" ]]; then
  JOBS=$(nproc) scripts/cuda-emu-check.sh
fi
