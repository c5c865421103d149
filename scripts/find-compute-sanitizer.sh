#!/usr/bin/env bash
# Prints the path of a working NVIDIA compute-sanitizer (one whose --version answers) and exits 0,
# or prints where it looked on stderr and exits 1. Looks, in order, at $KILN_COMPUTE_SANITIZER,
# .gpu-bundle/sanitizer (the nvidia-cuda-sanitizer-api wheel that scripts/gpu-bundle.sh unpacks),
# PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, /usr/local/cuda-*/bin, /opt/nvidia/*/bin, nvcc's
# directory, and the wheel installed for python3 (nvidia/cu13/bin for CUDA 13,
# nvidia/cuda_sanitizer_api/compute-sanitizer for CUDA 12).
set -uo pipefail
cd "$(dirname "$0")/.."

candidates=()
[[ -n "${KILN_COMPUTE_SANITIZER:-}" ]] && candidates+=("$KILN_COMPUTE_SANITIZER")
candidates+=(.gpu-bundle/sanitizer/nvidia/cu*/bin/compute-sanitizer
             .gpu-bundle/sanitizer/nvidia/cuda_sanitizer_api/compute-sanitizer/compute-sanitizer)
command -v compute-sanitizer >/dev/null && candidates+=("$(command -v compute-sanitizer)")
[[ -n "${CUDA_HOME:-}" ]] && candidates+=("$CUDA_HOME/bin/compute-sanitizer")
candidates+=(/usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer
             /opt/nvidia/*/bin/compute-sanitizer)
command -v nvcc >/dev/null && candidates+=("$(dirname "$(command -v nvcc)")/compute-sanitizer")
if command -v python3 >/dev/null; then
  while IFS= read -r c; do candidates+=("$c"); done < <(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for c in sorted(glob.glob(os.path.join(root, "cu*", "bin", "compute-sanitizer")), reverse=True):
            print(c)
        print(os.path.join(root, "cuda_sanitizer_api", "compute-sanitizer", "compute-sanitizer"))
except Exception:
    pass
PY
  )
fi

for c in "${candidates[@]}"; do
  if [[ -f "$c" && -x "$c" ]] && "$c" --version >/dev/null 2>&1; then
    readlink -f -- "$c"
    exit 0
  fi
done
echo "compute-sanitizer: none that runs among: ${candidates[*]}" >&2
exit 1
