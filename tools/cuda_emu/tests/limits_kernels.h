// The kernels of the emulator's launch-limit tests (limits_kernels.cu, converted by cu2cpp.py as
// kernels/cuda is) and their launch wrappers; each wrapper returns the launch's cudaGetLastError.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

namespace kiln_emu::test {

inline constexpr unsigned kBoundedThreads = 128;  // bounded_kernel's __launch_bounds__
inline constexpr size_t kOwnShared = 4096;        // static __shared__ of use_shared()
inline constexpr size_t kHelperShared = 1024;     // static __shared__ of block_total(), called
inline constexpr size_t kStaticShared = kOwnShared + kHelperShared;
inline constexpr unsigned kSharedThreads = 32;    // the shared-memory kernels' block

// bounded_kernel (__launch_bounds__(kBoundedThreads)) or plain_kernel (no bounds): every
// thread writes 1 to out[global thread id].
cudaError_t launch_bounded(dim3 grid, dim3 block, int* out);
cudaError_t launch_plain(dim3 grid, dim3 block, int* out);
// One block of kSharedThreads with `dynamic` bytes of dynamic shared memory, which it fills;
// out[0..kSharedThreads) = 1 + the block's sum of 1s (kSharedThreads). default_shared_kernel
// never opts in; optin_shared_kernel does with opt_in(bytes).
cudaError_t launch_default_shared(size_t dynamic, float* out);
cudaError_t launch_optin_shared(size_t dynamic, float* out);
cudaError_t opt_in(int bytes);

}  // namespace kiln_emu::test
