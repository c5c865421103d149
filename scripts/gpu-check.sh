#!/usr/bin/env bash
# GPU validation in one command, for a machine with an NVIDIA GPU and no network:
#   scripts/gpu-check.sh OUT_DIR
# 1. Binaries: built here (Release, CUDA for this GPU's architecture, into build-gpu/) when kiln's
#    build dependencies are installed; otherwise taken from .gpu-bundle/, made on a build machine
#    by scripts/gpu-bundle.sh and carried along with the tree.
# 2. Every gpu-labelled test: each CUDA op against its CPU twin, the whole model on the GPU
#    against the CPU path and llama.cpp's golden logits, NCCL/MPI communicators. The report counts
#    the tests that ran, passed and skipped; a skipped or missing test fails the step (a GPU is
#    visible here, so a skip means a test that tested nothing).
#    Then the kernel tests once more under NVIDIA compute-sanitizer: memcheck (every kernel test
#    and the micro model vs llama.cpp), racecheck (the kernels with shared memory) and synccheck
#    (the kernels with barriers or warp collectives), the three at once, each with a time limit;
#    any sanitizer error fails the step, and so does a missing compute-sanitizer (PATH, the CUDA
#    toolkit, an nvidia-cuda-sanitizer-api wheel, or .gpu-bundle/sanitizer from gpu-bundle.sh).
# 3. Two ranks sharing the GPU (TP 2 over the MPI fallback) against one rank: same greedy text.
# 4. `kiln bench` on the mini shape (bf16, made here by kiln make-model) at batch 1, 8 and 32.
# 5. kiln_cuda_bench: KDA chunked prefill at 8192 tokens, KDA decode step at batch 1-64, MLA
#    attention at depth, GEMV streaming against the peak DRAM bandwidth.
# Writes OUT_DIR/gpu-report.md (the figures) and OUT_DIR/gpu-check.log (everything). Sized to
# finish within 9 minutes on one H100; each step has its own time limit (the sanitizer limits are
# estimates until a GPU run's report gives their times). Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/gpu-report.md"
log="$out/gpu-check.log"
: >"$log"
work=$(mktemp -d /tmp/kiln-gpu-check.XXXXXX)
failures=0
t0=$(date +%s)

say() { printf '%s\n' "$*" | tee -a "$report"; }
step() {  # step NAME SECONDS CMD...: runs CMD with a time limit, output to the log
  local name=$1 limit=$2
  shift 2
  local s
  s=$(date +%s)
  echo "=== $name: $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >"$work/step.out" 2>&1
  local rc=$?
  cat "$work/step.out" >>"$log"
  echo "=== $name: exit $rc after $(($(date +%s) - s)) s" >>"$log"
  if [[ $rc -ne 0 ]]; then
    failures=$((failures + 1))
    say "- **$name failed** (exit $rc$([[ $rc -eq 124 ]] && echo ", over its ${limit} s limit")); see gpu-check.log"
  fi
  return $rc
}

: >"$report"
say "# kiln GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  say "no NVIDIA GPU is visible (nvidia-smi -L failed); nothing to check"
  exit 1
fi
say '```'
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.max.memory \
  --format=csv | tee -a "$report"
say '```'

# CUDA libraries: the toolkit's, plus the NVIDIA Python wheels' when present (NCCL often lives
# only there).
libpath=/usr/local/cuda/lib64
if command -v python3 >/dev/null; then
  extra=$(python3 - <<'PY' 2>/dev/null
import importlib, os
dirs = []
for name in ("nvidia.nccl", "nvidia.cublas", "nvidia.cuda_runtime"):
    try:
        for p in importlib.import_module(name).__path__:
            if os.path.isdir(os.path.join(p, "lib")):
                dirs.append(os.path.join(p, "lib"))
    except Exception:
        pass
print(":".join(dirs))
PY
  )
  [[ -n "$extra" ]] && libpath="$libpath:$extra"
fi

# 1. Binaries.
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
mode=""
if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WITH_CUDA=ON \
     -DKILN_BUILD_TESTS=ON "-DCMAKE_CUDA_ARCHITECTURES=$cap" >>"$log" 2>&1; then
  if step "build (sm_$cap)" 420 cmake --build build-gpu -j "$(nproc)"; then
    mode=build
    bin=$work/bin
    mkdir -p "$bin"
    for t in kiln kiln_cuda_tests kiln_cuda_bench kiln_mpi_gpu_tests; do
      f=$(find build-gpu -type f -name "$t" -perm -u+x | head -n 1)
      [[ -n "$f" ]] && ln -s "$PWD/$f" "$bin/$t"
    done
  fi
elif [[ -x .gpu-bundle/bin/kiln ]]; then
  mode=bundle
  bin=$PWD/.gpu-bundle/bin
  libpath="$PWD/.gpu-bundle/lib:$libpath"
  if [[ -d .gpu-bundle/ompi/usr ]]; then
    export OPAL_PREFIX=$PWD/.gpu-bundle/ompi/usr
    export PATH=$OPAL_PREFIX/bin:$PATH
    libpath="$libpath:$OPAL_PREFIX/lib/x86_64-linux-gnu/openmpi/lib"
  fi
else
  say ""
  say "**cannot build here** (CMake configure failed, see gpu-check.log) and there is no"
  say ".gpu-bundle/ (make one on a build machine with scripts/gpu-bundle.sh and carry it along)"
  exit 1
fi
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KILN_TEST_DATA_DIR=$PWD/tests/data  # the tests' data, wherever this tree lies
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
say ""
say "binaries: $mode ($([[ $mode == build ]] && echo "built for sm_$cap" || echo ".gpu-bundle"))"

# 2. The gpu-labelled tests.
say ""
say "## gpu tests"
ran=0 passed=0 skipped=0
if [[ $mode == build ]]; then
  registered=$(ctest --test-dir build-gpu -N -L gpu | sed -n 's/^Total Tests: *//p')
  step "ctest -L gpu" 240 ctest --test-dir build-gpu -L gpu -V -j 4
  # One status line per test: "  3/41 Test  #3: Name ......   Passed    0.20 sec".
  results=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$work/step.out")
  ran=$(grep -c . <<<"$results")
  passed=$(grep -cE ' Passed +[0-9.]+ sec' <<<"$results")
  skipped=$(grep -cE '\*\*\*Skipped' <<<"$results")
  grep -E "tests passed|tests failed|Not Run|\*\*\*Skipped|\*\*\*Failed" "$work/step.out" |
    sed 's/^/    /' | tee -a "$report" >/dev/null
else
  registered=$("$bin/kiln_cuda_tests" --gtest_list_tests | grep -c '^  ')
  step "kiln_cuda_tests" 240 "$bin/kiln_cuda_tests" --gtest_brief=1
  ran=$(sed -n 's/^\[==========\] \([0-9]*\) tests\{0,1\} from .* ran\..*/\1/p' "$work/step.out")
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$work/step.out")
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$work/step.out")
  ran=${ran:-0} passed=${passed:-0} skipped=${skipped:-0}
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|FAILED TEST" "$work/step.out" |
    sed 's/^/    /' | tee -a "$report" >/dev/null
fi
say "- gpu tests: ${registered:-0} registered, $ran ran, $passed passed, $skipped skipped"
if [[ $skipped -gt 0 || $ran -eq 0 || $ran -lt ${registered:-0} ]]; then
  failures=$((failures + 1))
  say "- **gpu tests incomplete**: a GPU is visible, so every registered gpu test must run (a skip" \
    "means a test that tested nothing)"
fi
say '```'
grep -hE '^\[(gpu parity|gpu vs cpu|cuda)' "$log" | tee -a "$report" >/dev/null
say '```'
if [[ -x "$bin/kiln_mpi_gpu_tests" && $mode == bundle ]]; then
  # Exit 77 (its skip) fails here too: the GPU is visible.
  step "mpirun -np 2 kiln_mpi_gpu_tests" 120 mpirun --oversubscribe -np 2 "$bin/kiln_mpi_gpu_tests"
fi

# 2b. The kernel tests under compute-sanitizer, the three tools at once.
say ""
say "## compute-sanitizer"
sanitizer=$(scripts/find-compute-sanitizer.sh 2>>"$log")
if [[ -z "$sanitizer" ]]; then
  failures=$((failures + 1))
  say "- **compute-sanitizer not found** (PATH, \$CUDA_HOME/bin, /usr/local/cuda*/bin, nvcc's" \
    "directory, the nvidia-cuda-sanitizer-api wheel, .gpu-bundle/sanitizer): the sanitizer step" \
    "cannot pass without it; make .gpu-bundle with scripts/gpu-bundle.sh, which carries it"
else
  say "- $sanitizer: $("$sanitizer" --version 2>&1 | grep -m1 -i version)"
  # Shared memory: conv, kda, mla, moe, norm, sampling. Barriers or warp collectives: those and
  # the GEMMs. The whole-model tests run only once (memcheck, the micro model): they are slow
  # under a sanitizer and run the same kernels.
  kernels='CudaMatmul.*:CudaGroupedMatmul.*:CudaEmbeddingLookup.*:CudaElementwise.*'
  shared='CudaNorm.*:CudaConv.*:CudaKda.*:CudaMla.*:CudaMoe.*:CudaSampling.*'
  declare -A filter=([memcheck]="$kernels:$shared:GpuModel.MicroMatchesLlamaCppGolden"
                     [racecheck]="$shared"
                     [synccheck]="$kernels:$shared")
  declare -A limit=([memcheck]=150 [racecheck]=180 [synccheck]=120)
  declare -A pid=() status=()
  # One process per tool, side by side, unless the GPU takes one process at a time.
  together=yes
  nvidia-smi --query-gpu=compute_mode --format=csv,noheader | grep -qi exclusive && together=no
  s0=$(date +%s)
  for tool in memcheck racecheck synccheck; do
    timeout --kill-after=10 "${limit[$tool]}" "$sanitizer" --tool "$tool" --error-exitcode 86 \
      --print-limit 50 "$bin/kiln_cuda_tests" "--gtest_filter=${filter[$tool]}" --gtest_brief=1 \
      >"$work/$tool.out" 2>&1 &
    pid[$tool]=$!
    if [[ $together == no ]]; then
      wait "${pid[$tool]}"
      status[$tool]=$?
    fi
  done
  for tool in memcheck racecheck synccheck; do
    if [[ -z "${status[$tool]:-}" ]]; then
      wait "${pid[$tool]}"
      status[$tool]=$?
    fi
    rc=${status[$tool]}
    { echo "=== compute-sanitizer --tool $tool: ${filter[$tool]}"; cat "$work/$tool.out"
      echo "=== $tool: exit $rc"; } >>"$log"
    tests=$(sed -n 's/^\[==========\] \([0-9]*\) tests\{0,1\} from .* ran\..*/\1/p' "$work/$tool.out")
    summary=$(grep -m1 -E '(ERROR|RACECHECK) SUMMARY' "$work/$tool.out" | sed 's/^=* *//')
    if [[ $rc -eq 0 && ${tests:-0} -gt 0 ]]; then
      say "- $tool: ${tests} tests, ${summary:-no summary}"
    else
      failures=$((failures + 1))
      why="exit $rc"
      [[ $rc -eq 86 ]] && why="sanitizer errors"
      [[ $rc -eq 124 || $rc -eq 137 ]] && why="over its ${limit[$tool]} s limit"
      [[ $rc -eq 0 ]] && why="no test ran"
      say "- **$tool failed** ($why): ${tests:-0} tests, ${summary:-no summary}; see gpu-check.log"
      grep -m 8 -E '^========= (Invalid|Race|Barrier|Error|ERROR|Warning)|^\[  FAILED' \
        "$work/$tool.out" | sed 's/^/    /' | tee -a "$report" >/dev/null
    fi
  done
  say "- sanitizer stage: $(($(date +%s) - s0)) s"
fi

# 3. Two ranks on the one GPU (TP 2 through MPI with host staging) == one rank.
micro=tests/data/golden/kimi-micro-f32.gguf
gen=(generate --backend cuda --model "$micro" --prompt "The quick brown fox" --max-tokens 24
     --temperature 0)
say ""
say "## two ranks sharing the GPU vs one"
if step "generate -np 1" 120 mpirun --oversubscribe -np 1 "$bin/kiln" "${gen[@]}"; then
  grep -v '^\[prompt' "$work/step.out" >"$work/np1.txt"
  if step "generate -np 2" 120 mpirun --oversubscribe -np 2 "$bin/kiln" "${gen[@]}"; then
    grep -v '^\[prompt' "$work/step.out" >"$work/np2.txt"
    if cmp -s "$work/np1.txt" "$work/np2.txt"; then
      say "- greedy text of -np 2 (TP 2, MPI fallback) equals -np 1: yes"
    else
      failures=$((failures + 1))
      say "- **greedy text differs between -np 1 and -np 2**:"
      say "  np1: $(tr '\n' ' ' <"$work/np1.txt")"
      say "  np2: $(tr '\n' ' ' <"$work/np2.txt")"
    fi
  fi
fi

# 4. kiln bench on the mini shape, bf16.
say ""
say "## kiln bench, mini bf16"
if step "make-model mini bf16" 180 "$bin/kiln" make-model --preset mini --dtype bf16 \
     --format gguf --seed 1 --out "$work/mini"; then
  for batch in 1 8 32; do
    args=(bench --backend cuda --model "$work/mini/model.gguf" --runs 3)
    [[ $batch -gt 1 ]] && args+=(--batch "$batch")
    if step "bench batch $batch" 150 "$bin/kiln" "${args[@]}"; then
      say "batch $batch:"
      say '```'
      grep -E "^(device|peak|weights read|prefill|decode|batched|  )" "$work/step.out" |
        tee -a "$report" >/dev/null
      say '```'
    fi
  done
fi

# 5. Kernel microbenchmarks.
say ""
say "## CUDA kernels (kiln_cuda_bench --quick)"
if step "kiln_cuda_bench" 150 "$bin/kiln_cuda_bench" --quick; then
  grep -E '^(\||device)' "$work/step.out" | tee -a "$report" >/dev/null
fi

say ""
say "total: $(($(date +%s) - t0)) s, $failures failed step(s)"
rm -rf "$work"
[[ $failures -eq 0 ]]
