// The CUDA execution model on the host, force-included (-include) into every .cu file that
// cu2cpp.py converted to C++. Device code compiles as plain C++: the CUDA headers give the types
// (dim3, float2, __half, __nv_bfloat16) and the host conversions; this header defines the
// qualifiers away and provides the built-in variables, barriers, warp intrinsics and atomics the
// kernels use. Semantics (emu_exec.cpp): a block's threads run as fibers of one OS thread
// (switching only at __syncthreads, __syncwarp and warp intrinsics), the blocks of a launch are
// spread over a few worker threads, every launch completes before launch() returns.
// Shared memory: block_shared (static __shared__) and dynamic_shared (extern __shared__) are
// per-block storage poisoned with NaN bytes before each block, so reads of unwritten shared
// memory show up; dynamic shared memory ends at a guard page (an overrun faults).
#pragma once

#include <math.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include <cuda_runtime_api.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __shared__
#undef __constant__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __constant__ static const
#define __launch_bounds__(...)
#undef __align__
#define __align__(n) alignas(n)

// The built-in variables of the running CUDA thread (set by the scheduler on every switch).
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

namespace kiln_emu {

// ---- execution (emu_exec.cpp) ---------------------------------------------------------------

// One static __shared__ declaration of a kernel's call tree.
struct SharedDecl {
  size_t bytes, align;
};
// Records a __global__ function as cu2cpp.py found it in `file`: its __launch_bounds__ maximum
// (0: none) and its call tree's static shared memory. Called during static initialisation.
bool register_kernel(const char* file, const char* name, int max_threads,
                     std::initializer_list<SharedDecl> shared);

// Runs body(arg) as every thread of every block of the grid; returns when all are done. A launch
// that the smallest target architecture refuses (emu_internal.h: block and grid dimensions,
// threads beyond __launch_bounds__, static + dynamic shared memory beyond the default or the
// cudaFuncSetAttribute opt-in for `kernel`) prints why, records the error for cudaGetLastError
// and runs nothing.
void run_kernel(const char* name, const char* file, int line, dim3 grid, dim3 block,
                size_t smem, cudaStream_t stream, const void* kernel, void (*body)(void*),
                void* arg);
// The block barrier (__syncthreads). Threads that have returned count as arrived.
void sync_block();
// The warp barrier of the calling thread's warp; `mask` must name the whole warp.
void sync_warp(unsigned mask);
// Every lane of the warp publishes v; returns the value published by lane src (its own value
// when src is outside the warp's lanes). One warp barrier.
uint64_t warp_exchange(uint64_t v, int src, unsigned mask);
// The lanes of the warp whose v equals the caller's.
unsigned warp_match(uint64_t v, unsigned mask);
// Bit l set when lane l's predicate is true.
unsigned warp_ballot(bool pred, unsigned mask);
// The calling thread's lane.
int lane_id();
// Base of the current block's dynamic shared memory (16-byte aligned).
void* dynamic_shared_base();
// `bytes` of the current block's static shared memory for the declaration `tag`: the same
// storage for every thread of the block, poisoned when first taken in the block.
void* static_shared(const void* tag, size_t bytes, size_t align);

template <class T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_base());
}

// A static __shared__ declaration; Tag (a lambda type) is unique per declaration and per
// template instantiation of the enclosing function, as is the storage on a GPU.
template <class T, class Tag>
T& block_shared(Tag) {
  static const char tag = 0;
  return *static_cast<T*>(static_shared(&tag, sizeof(T), alignof(T)));
}

template <class... P>
struct LaunchArgs {
  void (*kernel)(P...);
  std::tuple<std::remove_cvref_t<P>...> args;
};

template <class... P>
void run_body(void* p) {
  auto& a = *static_cast<LaunchArgs<P...>*>(p);
  std::apply(a.kernel, a.args);  // each CUDA thread gets its own copies of the parameters
}

// A kernel launch as cu2cpp.py writes it: the arguments are converted to the kernel's parameter
// types once, on the host, as a CUDA launch does.
template <class... P, class... A>
void launch(const char* name, const char* file, int line, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
  LaunchArgs<P...> a{kernel, std::tuple<std::remove_cvref_t<P>...>(std::forward<A>(args)...)};
  run_kernel(name, file, line, grid, block, smem, stream, reinterpret_cast<const void*>(kernel),
             &run_body<P...>, &a);
}

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "unsupported shuffle type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace kiln_emu

// ---- runtime API overloads that nvcc's C++ headers add -------------------------------------

template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// ---- barriers and warp intrinsics -----------------------------------------------------------

#define __syncthreads() ::kiln_emu::sync_block()
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::kiln_emu::sync_warp(mask); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
  const int lane = ::kiln_emu::lane_id(), seg = lane & ~(width - 1);
  return ::kiln_emu::from_bits<T>(
      ::kiln_emu::warp_exchange(::kiln_emu::to_bits(v), seg + (src & (width - 1)), mask));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int lane = ::kiln_emu::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::kiln_emu::from_bits<T>(::kiln_emu::warp_exchange(::kiln_emu::to_bits(v), src, mask));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::kiln_emu::lane_id();
  int src = lane + static_cast<int>(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::kiln_emu::from_bits<T>(::kiln_emu::warp_exchange(::kiln_emu::to_bits(v), src, mask));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::kiln_emu::lane_id();
  int src = lane - static_cast<int>(delta);
  if (src < (lane & ~(width - 1))) src = lane;
  return ::kiln_emu::from_bits<T>(::kiln_emu::warp_exchange(::kiln_emu::to_bits(v), src, mask));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T v) {
  return ::kiln_emu::warp_match(::kiln_emu::to_bits(v), mask);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::kiln_emu::warp_ballot(pred != 0, mask);
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- atomics (device-wide: blocks on different workers run concurrently) --------------------

template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
T atomicSub(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <class T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}
// Stores v while better(v, *p); returns the old value.
template <class T, class Better>
T atomic_store_if(T* p, T v, Better better) {
  std::atomic_ref<T> r(*p);
  T old = r.load();
  while (better(v, old) && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  return atomic_store_if(p, v, [](T a, T b) { return b < a; });
}
template <class T>
T atomicMin(T* p, T v) {
  return atomic_store_if(p, v, [](T a, T b) { return a < b; });
}

// ---- loads, bit casts, integer intrinsics, min/max ------------------------------------------

template <class T>
T __ldg(const T* p) {
  return *p;
}
inline int __popc(unsigned v) { return std::popcount(v); }
inline int __popcll(unsigned long long v) { return std::popcount(v); }
inline int __clz(unsigned v) { return std::countl_zero(v); }
inline int __ffs(int v) { return v == 0 ? 0 : std::countr_zero(static_cast<unsigned>(v)) + 1; }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }

// CUDA's device min/max accept mixed integer widths and return the wider type.
template <class A, class B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
