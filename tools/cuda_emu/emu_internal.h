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
// The cudaFuncAttributeMaxDynamicSharedMemorySize that `kernel` set; -1 when it set none.
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

// The per-block limits of the architectures kiln may target (CUDA C++ Programming Guide,
// "Technical Specifications per Compute Capability"). Every one of them allows 1024 threads per
// block (dimensions 1024 × 1024 × 64), grids of (2³¹ − 1) × 65535 × 65535 blocks, 48 KiB of
// static shared memory and 48 KiB of dynamic shared memory without the opt-in; they differ in
// what the opt-in gives to one block (static + dynamic).
struct ArchLimits {
  int sm;
  int shared_optin;
};
inline constexpr ArchLimits kArchLimits[] = {
    {80, 166912},   // A100: 163 KiB
    {86, 101376},   // 99 KiB
    {87, 166912},   // 163 KiB
    {89, 101376},   // L4, L40: 99 KiB
    {90, 232448},   // H100, H200: 227 KiB
    {100, 232448},  // 227 KiB
    {120, 101376},  // 99 KiB
};
constexpr ArchLimits arch_limits(int sm) {
  for (const ArchLimits& a : kArchLimits) {
    if (a.sm == sm) return a;
  }
  throw "no launch limits for this architecture: add it to kArchLimits";
}

// Launches are checked against the smallest architecture the build targets
// (CMAKE_CUDA_ARCHITECTURES; tools/cuda_emu/CMakeLists.txt sets KILN_EMU_SM), the emulated
// device reports its shared memory limits, and cudaFuncSetAttribute refuses more.
#ifndef KILN_EMU_SM
#error "KILN_EMU_SM (the smallest target architecture) comes from tools/cuda_emu/CMakeLists.txt"
#endif
inline constexpr ArchLimits kTarget = arch_limits(KILN_EMU_SM);
inline constexpr int kSharedOptin = kTarget.shared_optin;  // static + dynamic, opted in
inline constexpr int kSharedDefault = 48 * 1024;           // without the opt-in
inline constexpr int kStaticSharedMax = 48 * 1024;         // static __shared__ per block
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
inline constexpr unsigned kMaxGridDim[3] = {0x7fffffffu, 65535, 65535};
// The rest of what the emulated device reports (device.cpp): an H100-like part.
inline constexpr int kSMs = 132;
inline constexpr size_t kTotalMem = size_t{80} << 30;  // bytes of device memory

// What the launches of one kernel (its name without template arguments) have used so far: the
// largest block and dynamic and static + dynamic shared memory of a launch that ran.
struct KernelUsage {
  size_t static_bytes = 0;  // its call tree's static __shared__ declarations
  int bounds = 0;           // its __launch_bounds__ maximum, 0 when none
  uint64_t launches = 0;
  unsigned max_threads = 0;
  size_t max_dynamic = 0, max_total = 0;
  size_t last_total = 0;  // static + dynamic of the latest launch that ran
};
// False when no kernel of that name is registered.
bool kernel_usage(const char* name, KernelUsage* out);

}  // namespace kiln_emu
