#!/usr/bin/env bash
# Long libFuzzer runs with ASan+UBSan (clang).
#   scripts/fuzz.sh TARGET [RUNS] [libFuzzer flags...]   fuzz one target (default 10000000 runs)
#   scripts/fuzz.sh --merge TARGET                       minimise what was found into the repo
# TARGET: gguf safetensors tokenizer request topology chat_template step_plan.
# Builds build-fuzz/ (CC=clang, -DKILN_FUZZ=ON) when needed. The run starts from the committed
# seeds (tests/fuzz/corpus/TARGET) and writes new inputs to build-fuzz/found/TARGET; crashes, leaks
# and timeouts (any input over 1 s) land in build-fuzz/artifacts/TARGET. --merge keeps only the
# inputs that add coverage, back in tests/fuzz/corpus/TARGET (which ctest replays); the inputs of
# fixed findings live in tests/fuzz/corpus/TARGET/regress/ and are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
if [[ "${1:-}" == "--merge" ]]; then merge=1; shift; fi
target=${1:?usage: scripts/fuzz.sh [--merge] TARGET [RUNS] [libFuzzer flags...]}
runs=${2:-10000000}
shift $(( $# < 2 ? $# : 2 ))
bin=build-fuzz/tests/fuzz/kiln_fuzz_${target}
seeds=tests/fuzz/corpus/${target}
found=build-fuzz/found/${target}
artifacts=build-fuzz/artifacts/${target}
[[ -d $seeds ]] || { echo "fuzz.sh: no corpus directory $seeds" >&2; exit 2; }

if [[ ! -f build-fuzz/CMakeCache.txt ]]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DKILN_WITH_CUDA=OFF -DKILN_WITH_MPI=OFF \
    -DKILN_BUILD_TESTS=ON -DKILN_FUZZ=ON -DKILN_SANITIZE=address,undefined,fuzzer-no-link
fi
ninja -C build-fuzz "kiln_fuzz_${target}"
mkdir -p "$found" "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
dict=()
[[ -f tests/fuzz/dict/${target}.dict ]] && dict=(-dict="tests/fuzz/dict/${target}.dict")

if (( merge )); then
  tmp=$(mktemp -d)
  # Edges only (no hit counts): every edge covered with about half the files, for a quick replay.
  "$bin" -merge=1 -use_counters=0 "$tmp" "$seeds" "$found"
  find "$seeds" -maxdepth 1 -type f -delete   # regress/ (inputs of fixed findings) stays as is
  mv "$tmp"/* "$seeds"/ && rmdir "$tmp"
  echo "fuzz.sh: $seeds now holds $(ls "$seeds" | wc -l) inputs ($(du -sh --apparent-size "$seeds" | cut -f1))"
  exit 0
fi
max_len=4096
[[ $target == chat_template ]] && max_len=8192   # a template (2.5 KB) and a request body
exec "$bin" -runs="$runs" -max_len="$max_len" -timeout=1 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" "$@" "$found" "$seeds"
