// The CUDA runtime and cuBLAS entry points kiln calls, emulated on the host: one H100-like device
// (KILN_EMU_DEVICES changes the count; KILN_EMU_FAIL makes chosen set-up calls fail, see
// emu_internal.h), synchronous streams and copies. cuBLAS is in cublas.cpp.
//
// Device memory comes from one reserved address range. Each cudaMalloc gets its own pages:
// [256-byte red zone][data, NaN-poisoned][red zone to the page end]. Device memory is PROT_NONE
// except while the emulator itself touches it (kernels, copies, memsets, cuBLAS), so a host
// dereference of a device pointer faults and is reported; after each of those operations the red
// zones are checked (a write past an allocation is reported with the operation's name); freed
// pages are never reused and stay PROT_NONE (use after free faults). Copies, memsets and cuBLAS
// operands must lie inside one live allocation (or, for the host side, outside device memory).
// A copy or memset of device memory on a default stream while a non-blocking stream exists is
// reported (check_stream_order): on a GPU it is not ordered with that stream's kernels.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tools/cuda_emu/emu_internal.h"

namespace kiln_emu {
namespace {

constexpr size_t kReserve = size_t{1} << 38;  // 256 GiB of address space, never reused
constexpr size_t kRedzone = 256;
constexpr uint32_t kPoison = 0x7fc00000u;
constexpr uint8_t kRedzoneByte = 0xa5;

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

struct Chunk {
  char* begin;  // page aligned
  size_t span;  // bytes of pages
  char* data;
  size_t bytes;
};

struct Memory {
  std::mutex mu;
  char* base = nullptr;
  size_t bump = 0;
  size_t live_bytes = 0;
  std::map<uintptr_t, Chunk> live;   // by data address
  std::map<uintptr_t, Chunk> freed;  // by data address
  bool open = false;                 // device_access_begin is in effect
};

Memory& mem() {
  static Memory* m = [] {
    auto* r = new Memory();
    void* p = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                   0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "[cuda-emu] cannot reserve device address space\n");
      std::abort();
    }
    r->base = static_cast<char*>(p);
    return r;
  }();
  return *m;
}

bool in_device_range(const void* p) {
  const Memory& m = mem();
  const char* c = static_cast<const char*>(p);
  return c >= m.base && c < m.base + kReserve;
}

// The chunk whose pages hold p (live or freed), or null.
const Chunk* chunk_at(const std::map<uintptr_t, Chunk>& map, const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = map.upper_bound(a + kRedzone);
  if (it == map.begin()) return nullptr;
  --it;
  const Chunk& c = it->second;
  return a >= reinterpret_cast<uintptr_t>(c.begin) &&
                 a < reinterpret_cast<uintptr_t>(c.begin) + c.span
             ? &c
             : nullptr;
}

void protect(const Chunk& c, int prot) {
  if (mprotect(c.begin, c.span, prot) != 0) fatal("mprotect failed");
}

// Sets every live chunk to prot, merging neighbours into one call.
void protect_live(Memory& m, int prot) {
  char* run = nullptr;
  size_t run_len = 0;
  for (const auto& [a, c] : m.live) {
    if (run != nullptr && run + run_len == c.begin) {
      run_len += c.span;
      continue;
    }
    if (run != nullptr && mprotect(run, run_len, prot) != 0) fatal("mprotect failed");
    run = c.begin;
    run_len = c.span;
  }
  if (run != nullptr && mprotect(run, run_len, prot) != 0) fatal("mprotect failed");
}

// The first corrupted red-zone byte of c, or null.
const char* bad_redzone(const Chunk& c) {
  for (const char* p = c.begin; p < c.data; ++p) {
    if (static_cast<uint8_t>(*p) != kRedzoneByte) return p;
  }
  for (const char* p = c.data + c.bytes; p < c.begin + c.span; ++p) {
    if (static_cast<uint8_t>(*p) != kRedzoneByte) return p;
  }
  return nullptr;
}

void check_redzones(Memory& m, const char* what) {
  for (const auto& [a, c] : m.live) {
    if (const char* p = bad_redzone(c)) {
      fatal("%s wrote outside a device allocation: byte %td relative to the start of an "
            "allocation of %zu bytes at %p",
            what, p - c.data, c.bytes, static_cast<void*>(c.data));
    }
  }
}

// ---- fault reports ----------------------------------------------------------------------------

struct Guard {
  const char* begin;
  size_t bytes;
  const char* what;
};
std::mutex g_guard_mu;
std::vector<Guard>* g_guards = new std::vector<Guard>();

void on_fault(int sig, siginfo_t* info, void*) {
  const void* addr = info->si_addr;
  const char* kernel = current_kernel();
  if (in_device_range(addr)) {
    Memory& m = mem();
    const char* who = kernel ? kernel : (m.open ? "the emulator (a copy or cuBLAS)" : "host code");
    if (const Chunk* c = chunk_at(m.live, addr)) {
      fatal("%s touched device memory at %p (byte %td of a live allocation of %zu bytes) while "
            "it was not accessible: %s",
            who, addr, static_cast<const char*>(addr) - c->data, c->bytes,
            kernel ? "emulator bug" : "a host dereference of a device pointer");
    }
    if (const Chunk* c = chunk_at(m.freed, addr)) {
      fatal("%s touched freed device memory at %p (byte %td of a freed allocation of %zu bytes)",
            who, addr, static_cast<const char*>(addr) - c->data, c->bytes);
    }
    fatal("%s touched device address %p, outside every allocation", who, addr);
  }
  for (const Guard& g : *g_guards) {
    if (addr >= g.begin && addr < g.begin + g.bytes) {
      fatal("%s: fault at %p: %s", kernel ? kernel : "host", addr, g.what);
    }
  }
  signal(sig, SIG_DFL);  // not ours: fault again with the default action
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    static std::vector<char> alt(256 * 1024);
    stack_t ss{};
    ss.ss_sp = alt.data();
    ss.ss_size = alt.size();
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
}

// ---- device state -----------------------------------------------------------------------------

std::atomic<int> g_last_error{cudaSuccess};
std::mutex g_state_mu;
std::unordered_map<const void*, int> g_func_smem;
std::set<cudaStream_t> g_streams;
int g_nonblocking_streams = 0;  // live streams made with cudaStreamNonBlocking
struct Event {
  bool timing;
  bool recorded = false;
  std::chrono::steady_clock::time_point t;
};
std::set<Event*> g_events;

}  // namespace

thread_local int t_device = 0;

int device_count() {
  static const int n = [] {
    const char* e = std::getenv("KILN_EMU_DEVICES");
    return e ? std::atoi(e) : 1;
  }();
  return n;
}

bool injected_failure(const char* what) {
  static const std::string list = [] {
    const char* e = std::getenv("KILN_EMU_FAIL");
    return e ? "," + std::string(e) + "," : std::string();
  }();
  return list.find("," + std::string(what) + ",") != std::string::npos;
}

cudaError_t fail(cudaError_t e) {
  g_last_error.store(e);
  return e;
}

Side classify(const void* p, size_t bytes, const char* op, const char* role) {
  if (bytes == 0) return in_device_range(p) ? Side::kDevice : Side::kHost;
  if (!in_device_range(p)) return Side::kHost;
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  const Chunk* c = chunk_at(m.live, p);
  const char* cp = static_cast<const char*>(p);
  if (c == nullptr) {
    const bool was_freed = chunk_at(m.freed, p) != nullptr;
    std::fprintf(stderr, "[cuda-emu] %s: %s %p is %s\n", op, role, p,
                 was_freed ? "freed device memory" : "outside every device allocation");
    return Side::kBad;
  }
  if (cp < c->data || cp + bytes > c->data + c->bytes) {
    std::fprintf(stderr,
                 "[cuda-emu] %s: %s range [%td, %td) is outside its allocation of %zu bytes\n",
                 op, role, cp - c->data, cp + bytes - c->data, c->bytes);
    return Side::kBad;
  }
  return Side::kDevice;
}

namespace {

bool is_default_stream(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

// A copy or memset that touches device memory on a default stream (cudaMemcpy, cudaMemset, or
// an ...Async call on stream 0) while a non-blocking stream exists is not ordered with the kernels
// on that stream: on a GPU the transfer can still be in flight (a pageable host-to-device copy
// returns once its source is staged) when a kernel on the non-blocking stream reads the data.
void check_stream_order(cudaStream_t stream, Side dst, Side src, const char* op) {
  if (!is_default_stream(stream) || (dst != Side::kDevice && src != Side::kDevice)) return;
  int nonblocking = 0;
  {
    std::lock_guard<std::mutex> l(g_state_mu);
    nonblocking = g_nonblocking_streams;
  }
  if (nonblocking > 0) {
    fatal("%s on the default stream while %d non-blocking stream(s) exist: not ordered with "
          "their kernels; queue it on the stream that uses the data (cudaMemcpyAsync / "
          "cudaMemsetAsync, then synchronise that stream)",
          op, nonblocking);
  }
}

cudaError_t check_kind(cudaMemcpyKind kind, Side dst, Side src, const char* op) {
  if (dst == Side::kBad || src == Side::kBad) return fail(cudaErrorInvalidValue);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToHost: ok = dst == Side::kHost && src == Side::kHost; break;
    case cudaMemcpyHostToDevice: ok = dst == Side::kDevice && src == Side::kHost; break;
    case cudaMemcpyDeviceToHost: ok = dst == Side::kHost && src == Side::kDevice; break;
    case cudaMemcpyDeviceToDevice: ok = dst == Side::kDevice && src == Side::kDevice; break;
    case cudaMemcpyDefault: break;
  }
  if (!ok) {
    std::fprintf(stderr, "[cuda-emu] %s: kind %d does not match the pointers (dst %s, src %s)\n",
                 op, static_cast<int>(kind), dst == Side::kDevice ? "device" : "host",
                 src == Side::kDevice ? "device" : "host");
    return fail(cudaErrorInvalidMemcpyDirection);
  }
  return cudaSuccess;
}

cudaError_t copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                    size_t height, cudaMemcpyKind kind, cudaStream_t stream, const char* op) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (height > 0 && (width > dpitch || width > spitch)) return fail(cudaErrorInvalidPitchValue);
  const size_t dbytes = height == 0 ? 0 : dpitch * (height - 1) + width;
  const size_t sbytes = height == 0 ? 0 : spitch * (height - 1) + width;
  const Side dside = classify(dst, dbytes, op, "destination");
  const Side sside = classify(src, sbytes, op, "source");
  const cudaError_t e = check_kind(kind, dside, sside, op);
  if (e != cudaSuccess) return e;
  check_stream_order(stream, dside, sside, op);
  if (width == 0 || height == 0) return cudaSuccess;
  device_access_begin();
  for (size_t r = 0; r < height; ++r) {
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch,
                 width);
  }
  device_access_end(op);
  return cudaSuccess;
}

cudaError_t set_bytes(void* p, int value, size_t count, cudaStream_t stream, const char* op) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (count == 0) return cudaSuccess;
  if (classify(p, count, op, "destination") != Side::kDevice) return fail(cudaErrorInvalidValue);
  check_stream_order(stream, Side::kDevice, Side::kHost, op);
  device_access_begin();
  std::memset(p, value, count);
  device_access_end(op);
  return cudaSuccess;
}

}  // namespace

// ---- shared with emu_exec.cpp ------------------------------------------------------------------

void device_access_begin() {
  install_handler();
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  if (m.open) fatal("device_access_begin nested");
  protect_live(m, PROT_READ | PROT_WRITE);
  m.open = true;
}

void device_access_end(const char* what) {
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  check_redzones(m, what);
  protect_live(m, PROT_NONE);
  m.open = false;
}

void set_last_error(cudaError_t e) { g_last_error.store(e); }

int max_dynamic_shared(const void* kernel) {
  std::lock_guard<std::mutex> l(g_state_mu);
  auto it = g_func_smem.find(kernel);
  return it == g_func_smem.end() ? -1 : it->second;
}

bool valid_stream(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
  std::lock_guard<std::mutex> l(g_state_mu);
  return g_streams.count(s) != 0;
}

void add_guard(const void* begin, size_t bytes, const char* what) {
  install_handler();
  std::lock_guard<std::mutex> l(g_guard_mu);
  g_guards->push_back({static_cast<const char*>(begin), bytes, what});
}

void fatal(const char* fmt, ...) {
  std::fprintf(stderr, "[cuda-emu] ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, 2);
  std::fflush(stderr);
  signal(SIGABRT, SIG_DFL);
  std::abort();
}

}  // namespace kiln_emu

using namespace kiln_emu;

// ---- devices ----------------------------------------------------------------------------------

cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  *total_b = kTotalMem;
  *free_b = kTotalMem - std::min(kTotalMem, m.live_bytes);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > kSharedOptin) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> l(g_state_mu);
    g_func_smem[func] = value;
  }
  return cudaSuccess;
}

// ---- errors -------------------------------------------------------------------------------------

cudaError_t cudaGetLastError() { return static_cast<cudaError_t>(g_last_error.exchange(cudaSuccess)); }
cudaError_t cudaPeekAtLastError() { return static_cast<cudaError_t>(g_last_error.load()); }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorMemoryAllocation: return "out of memory";
    default: return cudaGetErrorName(e);
  }
}

// ---- memory -------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (injected_failure("malloc")) return fail(cudaErrorMemoryAllocation);
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  if (bytes > kTotalMem - std::min(kTotalMem, m.live_bytes)) return fail(cudaErrorMemoryAllocation);
  const size_t data_bytes = (bytes + kRedzone - 1) / kRedzone * kRedzone;
  const size_t span = (kRedzone + data_bytes + kRedzone + page_size() - 1) / page_size() *
                      page_size();
  if (m.bump + span > kReserve) return fail(cudaErrorMemoryAllocation);
  Chunk c{m.base + m.bump, span, m.base + m.bump + kRedzone, bytes};
  m.bump += span;
  protect(c, PROT_READ | PROT_WRITE);
  std::memset(c.begin, kRedzoneByte, c.span);
  auto* w = reinterpret_cast<uint32_t*>(c.data);
  for (size_t i = 0; i < bytes / 4; ++i) w[i] = kPoison;  // cudaMalloc gives garbage: make it NaN
  if (!m.open) protect(c, PROT_NONE);
  m.live.emplace(reinterpret_cast<uintptr_t>(c.data), c);
  m.live_bytes += bytes;
  *p = c.data;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  Memory& m = mem();
  std::lock_guard<std::mutex> l(m.mu);
  auto it = m.live.find(reinterpret_cast<uintptr_t>(p));
  if (it == m.live.end()) {
    std::fprintf(stderr, "[cuda-emu] cudaFree(%p): not a live allocation\n", p);
    return fail(cudaErrorInvalidDevicePointer);
  }
  const Chunk c = it->second;
  if (!m.open) protect(c, PROT_READ);
  if (const char* bad = bad_redzone(c)) {
    fatal("cudaFree: the red zone of an allocation of %zu bytes was overwritten at byte %td",
          c.bytes, bad - c.data);
  }
  protect(c, PROT_NONE);
  madvise(c.begin, c.span, MADV_DONTNEED);
  m.live.erase(it);
  m.freed.emplace(reinterpret_cast<uintptr_t>(c.data), c);
  m.live_bytes -= c.bytes;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  return *p != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return copy_2d(dst, count, src, count, count, 1, kind, nullptr, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return copy_2d(dst, count, src, count, count, 1, kind, stream, "cudaMemcpyAsync");
}

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind) {
  return copy_2d(dst, dpitch, src, spitch, width, height, kind, nullptr, "cudaMemcpy2D");
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  return copy_2d(dst, dpitch, src, spitch, width, height, kind, stream, "cudaMemcpy2DAsync");
}

cudaError_t cudaMemset(void* p, int value, size_t count) {
  return set_bytes(p, value, count, nullptr, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  return set_bytes(p, value, count, stream, "cudaMemsetAsync");
}

// ---- streams and events (everything completes before the call returns) ------------------------

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (injected_failure("stream")) return fail(cudaErrorUnknown);
  *s = reinterpret_cast<cudaStream_t>(new char((flags & cudaStreamNonBlocking) != 0 ? 1 : 0));
  std::lock_guard<std::mutex> l(g_state_mu);
  g_streams.insert(*s);
  if (flags & cudaStreamNonBlocking) ++g_nonblocking_streams;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::mutex> l(g_state_mu);
  if (g_streams.erase(s) == 0) return fail(cudaErrorInvalidResourceHandle);
  if (*reinterpret_cast<char*>(s) != 0) --g_nonblocking_streams;
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  return valid_stream(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  auto* ev = new Event{(flags & cudaEventDisableTiming) == 0, false, {}};
  std::lock_guard<std::mutex> l(g_state_mu);
  g_events.insert(ev);
  *e = reinterpret_cast<cudaEvent_t>(ev);
  return cudaSuccess;
}

namespace {
Event* find_event(cudaEvent_t e) {
  std::lock_guard<std::mutex> l(g_state_mu);
  auto* ev = reinterpret_cast<Event*>(e);
  return g_events.count(ev) ? ev : nullptr;
}
}  // namespace

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  Event* ev = find_event(e);
  if (ev == nullptr || !valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  ev->recorded = true;
  ev->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return find_event(e) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  return find_event(e) && valid_stream(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  Event* ea = find_event(a);
  Event* eb = find_event(b);
  if (ea == nullptr || eb == nullptr || !ea->timing || !eb->timing) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  if (!ea->recorded || !eb->recorded) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(eb->t - ea->t).count();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::mutex> l(g_state_mu);
  auto* ev = reinterpret_cast<Event*>(e);
  if (g_events.erase(ev) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete ev;
  return cudaSuccess;
}
