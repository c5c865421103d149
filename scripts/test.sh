#!/usr/bin/env bash
# Fresh machine → every test passing: installs dependencies, builds with warnings as errors,
# runs the whole ctest suite (labels: unit, parity, mpi, http, hostile; gpu tests report "skipped" without
# a GPU), then the CUDA backend's gpu tests on the CPU through the emulator (tools/cuda_emu) where
# the CUDA toolkit's headers are installed, then the unit (with the fuzz corpus replays), parity
# and hostile labels again under ASan + UBSan (scripts/sanitize-check.sh, build-asan).
# It ends with every skip and its reason (scripts/skip-summary.py) and fails on a skip that the
# machine does not explain (tests/expected-skips: e.g. a gpu test only where no GPU is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DKILN_BUILD_TESTS=ON -DKILN_WERROR=ON
scripts/python-env.sh   # the openai client for the HTTP tests, in build/pyenv

have_cuda_headers() { [[ -e /usr/local/cuda/include/cuda_runtime_api.h || -n "${CUDA_HOME:-}" ]]; }

# What the machine and the build have, in the terms of tests/expected-skips.
machine_facts() {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo gpu
  else
    echo no-gpu
  fi
  local probe=kiln-probe-$$
  if command -v ip >/dev/null && ip netns add "$probe" 2>/dev/null; then
    ip netns delete "$probe"
    if unshare --net ip link add kiln-p0 type veth peer name kiln-p1 2>/dev/null; then
      echo netns
    else
      echo no-netns
    fi
  else
    echo no-netns
  fi
  if have_cuda_headers; then echo cuda-headers; else echo no-cuda-headers; fi
  if [[ -e build/tests/kiln_cuda_tests ]]; then echo cuda-build; else echo cpu-build; fi
}

# On every exit from here on (pass or fail): the skips of the stages that ran, checked against
# tests/expected-skips; an unexplained skip turns a passing run into a failing one.
summary_args=()
rm -f build/ctest-junit.xml build/cuda-emu-check.log build-asan/ctest-junit.xml  # a past run's
skip_summary() {
  local status=$? facts=()
  trap - EXIT
  mapfile -t facts < <(machine_facts)
  local fact_args=()
  for f in "${facts[@]}"; do fact_args+=(--fact "$f"); done
  python3 scripts/skip-summary.py --table tests/expected-skips "${fact_args[@]}" \
    "${summary_args[@]}" || { [[ $status -ne 0 ]] || status=1; }
  exit "$status"
}
trap skip_summary EXIT

summary_args+=(--ctest build "$PWD/build/ctest-junit.xml")
ctest --test-dir build --output-on-failure -j "$(nproc)" --output-junit "$PWD/build/ctest-junit.xml"
if have_cuda_headers; then
  summary_args+=(--emu build/cuda-emu-check.log)
  JOBS=$(nproc) scripts/cuda-emu-check.sh 2>&1 | tee build/cuda-emu-check.log
else
  summary_args+=(--stage emulator \
    "no CUDA headers (/usr/local/cuda/include/cuda_runtime_api.h absent, CUDA_HOME unset)")
fi
summary_args+=(--ctest build-asan "$PWD/build-asan/ctest-junit.xml")
JOBS=$(nproc) scripts/sanitize-check.sh --output-junit "$PWD/build-asan/ctest-junit.xml"
