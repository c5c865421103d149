// What the emulator's parts share: the execution model (emu_exec.cpp), the emulated CUDA runtime
// (runtime.cpp) and cuBLAS (cublas.cpp). Not included by converted kernel code.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace kiln_emu {

// Device memory is inaccessible (PROT_NONE) to the host except inside device_access_begin/end:
// kernel launches, copies, memsets and cuBLAS calls. A host access outside them faults and is
// reported as a host dereference of a device pointer. Not nested; host thread only.
void device_access_begin();
// Verifies the red zones of every live allocation (reporting `what` wrote past an allocation)
// and protects device memory again.
void device_access_end(const char* what);

// The sticky error that the next cudaGetLastError / cudaPeekAtLastError reports.
void set_last_error(cudaError_t e);
// The dynamic shared memory that `kernel` may use (cudaFuncAttributeMaxDynamicSharedMemorySize,
// 48 KiB unless raised).
int max_dynamic_shared(const void* kernel);
bool valid_stream(cudaStream_t s);

// Registers [begin, end) as a guard region: a fault there is reported with `what`.
void add_guard(const void* begin, size_t bytes, const char* what);

// Where a copy or cuBLAS operand of `bytes` at p lies: inside one live device allocation, in host
// memory, or neither (reported on stderr naming `op` and the operand's `role`).
enum class Side { kHost, kDevice, kBad };
Side classify(const void* p, size_t bytes, const char* op, const char* role);

// The number of emulated devices (KILN_EMU_DEVICES, default 1) and the calling thread's current
// one.
int device_count();
extern thread_local int t_device;
// True when KILN_EMU_FAIL (a comma-separated list) names `what`: the emulated call of that name
// fails as it would on a broken device although a device exists. Names: "cublas" (cublasCreate),
// "stream" (cudaStreamCreate*), "malloc" (cudaMalloc).
bool injected_failure(const char* what);
// Sets the sticky error to e and returns it.
cudaError_t fail(cudaError_t e);

// The kernel running now (null between launches), for fault reports.
const char* current_kernel();

// Prints "[cuda-emu] <message>" and a backtrace to stderr, then aborts.
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Hardware limits reported by the emulated device (an H100-like sm_90 part).
inline constexpr int kSharedOptin = 232448;          // bytes of dynamic shared memory, opted in
inline constexpr int kSharedDefault = 48 * 1024;     // without the opt-in
inline constexpr int kStaticSharedMax = 48 * 1024;  // static __shared__ per block
inline constexpr int kSMs = 132;
inline constexpr size_t kTotalMem = size_t{80} << 30;  // bytes of device memory

}  // namespace kiln_emu
