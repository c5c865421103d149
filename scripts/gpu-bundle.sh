#!/usr/bin/env bash
# Builds kiln with CUDA on this (build) machine, which needs no GPU, and packs into .gpu-bundle/
# what a GPU machine without kiln's build dependencies needs to run scripts/gpu-check.sh: the
# binaries (kiln, kiln_cuda_tests, kiln_cuda_bench, kiln_mpi_gpu_tests when built), the shared
# libraries they load that are neither glibc nor part of the NVIDIA driver or CUDA toolkit,
# Open MPI's runtime (mpirun, orted, components, help files) for the multi-rank check, and NVIDIA
# compute-sanitizer (the nvidia-cuda-sanitizer-api wheel from PyPI, unpacked into
# .gpu-bundle/sanitizer; about 40 MB) for the sanitizer step, since the GPU machine may have
# neither the CUDA toolkit's copy nor a network.
# Copy or carry .gpu-bundle/ to the GPU machine with the source tree (it is git-ignored).
#   KILN_CUDA_ARCHS   CUDA architectures to build (default "80;90": Ampere and Hopper)
#   KILN_SANITIZER    pip requirement for compute-sanitizer (default
#                     "nvidia-cuda-sanitizer-api==13.*", matching the CUDA 13 toolkit)
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${KILN_CUDA_ARCHS:-80;90}
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WITH_CUDA=ON \
  -DKILN_BUILD_TESTS=ON -DKILN_WERROR=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs" >/dev/null
targets=(kiln kiln_cuda_tests kiln_cuda_bench)
if ninja -C build-gpu -t targets all 2>/dev/null | grep -q '^kiln_mpi_gpu_tests:'; then
  targets+=(kiln_mpi_gpu_tests)
fi
cmake --build build-gpu -j "$(nproc)" --target "${targets[@]}"

b=.gpu-bundle
rm -rf "$b"
mkdir -p "$b/bin" "$b/lib"
for t in "${targets[@]}"; do
  f=$(find build-gpu -type f -name "$t" -perm -u+x | head -n 1)
  cp "$f" "$b/bin/"
  strip --strip-unneeded "$b/bin/$t" 2>/dev/null || true
done

# Open MPI's runtime tree, relocated on the GPU machine with OPAL_PREFIX=$b/ompi/usr.
ompi_lib=/usr/lib/x86_64-linux-gnu/openmpi
mkdir -p "$b/ompi/usr/bin" "$b/ompi/usr/lib/x86_64-linux-gnu" "$b/ompi/usr/share"
cp -a "$ompi_lib" "$b/ompi/usr/lib/x86_64-linux-gnu/"
[[ -d /usr/share/openmpi ]] && cp -a /usr/share/openmpi "$b/ompi/usr/share/"
for t in mpirun orterun orted; do
  if command -v "$t" >/dev/null; then cp -L "$(command -v "$t")" "$b/ompi/usr/bin/"; fi
done

# Every shared library the binaries, Open MPI's programs and its components load, except glibc's
# and NVIDIA's (the GPU machine has its own driver and CUDA libraries).
{
  for f in "$b"/bin/* "$b"/ompi/usr/bin/*; do ldd "$f" 2>/dev/null || true; done
  find "$b/ompi" -name '*.so*' -type f -print0 | xargs -0 -r -n 20 ldd 2>/dev/null || true
} | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|ld-linux*) continue ;;
    libcuda.so*|libcudart.so*|libcublas*|libnccl*|libnvidia*|libnvrtc*) continue ;;
  esac
  cp -L "$lib" "$b/lib/"
done

# compute-sanitizer: the wheel's files as pip lays them out (nvidia/cu13/bin/compute-sanitizer is
# a wrapper that runs nvidia/cu13/compute-sanitizer/compute-sanitizer), less its docs and headers.
python3 -m pip install --quiet --no-deps --no-compile --target "$b/sanitizer" \
  "${KILN_SANITIZER:-nvidia-cuda-sanitizer-api==13.*}"
find "$b/sanitizer" -type d \( -name docs -o -name include -o -name '*.dist-info' \) -prune \
  -exec rm -rf {} +
KILN_COMPUTE_SANITIZER=$(ls "$b"/sanitizer/nvidia/cu*/bin/compute-sanitizer | head -n 1) \
  scripts/find-compute-sanitizer.sh >/dev/null  # it runs here (--version needs no GPU)
du -sh "$b"
