#!/usr/bin/env bash
# The crash tests under AddressSanitizer + UndefinedBehaviorSanitizer: configures build-asan (gcc,
# -DKILN_SANITIZE=address,undefined, CUDA off), builds only what the selected labels run and runs
# them: by default unit (the unit suites and the fuzz corpus replays), parity and hostile
# (the defective-file runs of the kiln binary). A sanitizer report aborts its process, so the test
# fails (UBSan does not recover; see kiln_sanitizer_env in tests/CMakeLists.txt). Leaks fail a
# test except where it joins MPI (Open MPI leaks its own start-up allocations).
#   scripts/sanitize-check.sh                        # part of scripts/test.sh
#   KILN_ASAN_LABELS='unit' scripts/sanitize-check.sh -R Gguf
# Environment: JOBS (build and ctest parallelism, default: all cores), KILN_ASAN_LABELS (default
# unit|parity|hostile), KILN_ASAN_BUILD_DIR (default build-asan), KILN_ASAN_OPT (default -O1: the
# cheapest build + run; -O2 compiles about 1.5x slower for a test run of under a minute).
# Extra arguments go to ctest. About 8 minutes on 2 idle cores from scratch, 1.5 of it tests.
# Exit status: ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KILN_ASAN_BUILD_DIR:-build-asan}
labels=${KILN_ASAN_LABELS:-unit|parity|hostile}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  "-DCMAKE_CXX_FLAGS_RELEASE=${KILN_ASAN_OPT:--O1} -g1" \
  -DKILN_SANITIZE=address,undefined -DKILN_WITH_CUDA=OFF -DKILN_WERROR=ON -DKILN_BUILD_TESTS=ON \
  >/dev/null
# What the labels run: every unit suite and fuzz replay driver (unit; kiln_unit_tests in
# tests/CMakeLists.txt), the parity suite (parity) and the kiln binary (parity, hostile and some
# unit tests start it). -g1: line numbers in reports.
targets=(kiln)
[[ unit =~ ^($labels)$ ]] && targets+=(kiln_unit_tests)
[[ parity =~ ^($labels)$ ]] && targets+=(kiln_parity_tests)
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
t0=$(date +%s)
status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" -L "^($labels)$" "$@" || status=$?
echo "sanitize-check: labels '$labels' exit status $status after $(( $(date +%s) - t0 )) s"
exit "$status"
