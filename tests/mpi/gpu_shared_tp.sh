#!/usr/bin/env bash
# Two ranks sharing one GPU (TP 2 through the MPI fallback with host staging) generate the same
# greedy text as one rank on that GPU. Exits 77 (ctest: skipped) when no GPU is visible.
#   gpu_shared_tp.sh MPIRUN KILN MODEL
set -euo pipefail
mpirun=$1 kiln=$2 model=$3
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no CUDA device is visible"
  exit 77
fi
args=(generate --backend cuda --model "$model" --prompt "The quick brown fox" --max-tokens 24
      --temperature 0 --threads 1)
one=$("$mpirun" --allow-run-as-root --oversubscribe -np 1 "$kiln" "${args[@]}" 2>/dev/null)
two=$("$mpirun" --allow-run-as-root --oversubscribe -np 2 "$kiln" "${args[@]}" 2>/dev/null)
echo "np 1: $one"
echo "np 2: $two"
[[ -n "$one" && "$one" == "$two" ]]
