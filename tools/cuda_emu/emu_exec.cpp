// The emulator's execution model: a launch's blocks are taken in turn by a pool of worker threads
// (the launching thread is one of them; KILN_EMU_WORKERS sets how many, default the hardware
// threads); a block's CUDA threads run as fibers on its worker's OS thread, first in thread order,
// then in the order barriers release them, each until it finishes or waits at a barrier
// (__syncthreads, or a warp barrier for __syncwarp and the warp intrinsics). Threads that returned
// count as arrived at the block barrier, as on sm_70+. Undefined behaviour that a GPU could hide
// is fatal here: a full-mask warp operation in a warp with missing or exited lanes, a lane
// exiting while its warp waits for it, and deadlock (threads waiting at different barriers). A
// launch is first checked against the limits of the smallest target architecture
// (emu_internal.h), with the kernel's __launch_bounds__ and static shared memory as cu2cpp.py
// registered them (register_kernel); a launch that hardware refuses runs nothing. x86-64 only:
// fibers switch with a small assembly routine (swapcontext makes a system call per switch).
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tools/cuda_emu/emu.h"
#include "tools/cuda_emu/emu_internal.h"

extern "C" void kiln_emu_switch(void** save_sp, void* new_sp);
extern "C" [[noreturn]] void kiln_emu_fiber_entry();

// Saves the callee-saved registers on the current stack, stores the stack pointer in *save_sp,
// and resumes the context whose stack pointer is new_sp. The floating-point control state is not
// switched: kernels never change it.
asm(R"(
  .text
  .globl kiln_emu_switch
  .type kiln_emu_switch, @function
kiln_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kiln_emu_switch, .-kiln_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

#define KILN_EMU_STRINGIFY_(x) #x
#define KILN_EMU_STRINGIFY(x) KILN_EMU_STRINGIFY_(x)

namespace kiln_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStaticArena = 64 * 1024;
constexpr uint32_t kPoison = 0x7fc00000u;  // a quiet NaN as f32; a huge index as int32
constexpr unsigned kFullMask = 0xffffffffu;

enum class State : uint8_t { kReady, kRunning, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  void* sp = nullptr;
  State state = State::kDone;
  uint32_t exchanges = 0;  // warp exchanges done: their parity picks the exchange buffer
  uint3 tid{0, 0, 0};
  int warp = 0;
  int lane = 0;
};

struct Warp {
  int size = 0;     // lanes that exist (the last warp of a block may be partial)
  int live = 0;     // lanes that have not returned
  int arrived = 0;  // lanes waiting at the warp barrier
  uint64_t slot[2][32] = {};
};

// A registered kernel and what its launches used (the usage under g_kernels_mu).
struct KernelInfo {
  std::string file, name;
  int bounds = 0;           // __launch_bounds__ maximum, 0 when none
  size_t static_bytes = 0;  // the declarations laid out in order, each at its alignment
  size_t static_sum = 0;    // their sizes added up: what a block may take at run time
  KernelUsage usage;
};

std::mutex g_kernels_mu;
std::deque<KernelInfo>& kernels() {
  static auto* k = new std::deque<KernelInfo>();  // registered during static initialisation
  return *k;
}

struct Job {
  const char* name;
  const KernelInfo* info;
  dim3 grid, block;
  size_t smem;
  void (*body)(void*);
  void* arg;
  uint64_t total_blocks;
  std::atomic<uint64_t> next{0};
};

// One worker's fibers, stacks and shared memory (thread_local: one per OS thread that runs
// blocks).
struct Worker {
  std::vector<char*> stacks;  // kStackBytes each, a guard page below
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int n = 0;
  int live = 0;
  int at_block_barrier = 0;
  int current = 0;
  std::vector<int> ready;  // fibers to resume, in order (FIFO; entries may be stale)
  size_t ready_head = 0;
  void* sched_sp = nullptr;
  const Job* job = nullptr;
  char* smem_end = nullptr;  // dynamic shared memory ends here, at a guard page
  char* dyn_smem = nullptr;
  char* static_arena = nullptr;
  size_t static_used = 0;
  size_t static_taken = 0;  // bytes of the declarations taken, without alignment gaps
  std::vector<std::pair<const void*, void*>> static_vars;
  std::vector<char> altstack;

  Worker() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t cap = (static_cast<size_t>(kSharedOptin) + page - 1) / page * page;
    char* region = static_cast<char*>(
        mmap(nullptr, cap + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (region == MAP_FAILED) fatal("cannot map shared memory");
    mprotect(region + cap, page, PROT_NONE);
    smem_end = region + cap;
    add_guard(smem_end, page, "past the end of the block's dynamic shared memory");
    static_arena = static_cast<char*>(std::aligned_alloc(256, kStaticArena));
    // Faults on a fiber's guard page need a stack of their own to be reported.
    altstack.resize(256 * 1024);
    stack_t ss{};
    ss.ss_sp = altstack.data();
    ss.ss_size = altstack.size();
    sigaltstack(&ss, nullptr);
  }

  char* stack(int i) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    while (static_cast<int>(stacks.size()) <= i) {
      char* s = static_cast<char*>(mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
      if (s == MAP_FAILED) fatal("cannot map a fiber stack");
      mprotect(s, page, PROT_NONE);
      add_guard(s, page, "a CUDA thread's stack overflowed");
      stacks.push_back(s + page);
    }
    return stacks[static_cast<size_t>(i)];
  }
};

thread_local Worker* t_worker = nullptr;
std::atomic<const char*> g_kernel{nullptr};

Worker& this_worker() {
  if (t_worker == nullptr) t_worker = new Worker();  // lives as long as its thread
  return *t_worker;
}

void poison(void* p, size_t bytes) {
  auto* w = static_cast<uint32_t*>(p);
  for (size_t i = 0; i < bytes / 4; ++i) w[i] = kPoison;
}

// A fresh context on stack i that starts in kiln_emu_fiber_entry (see kiln_emu_switch's frame:
// r15, r14, r13, r12, rbx, rbp, return address; entered with a 16-byte aligned call frame).
void* initial_context(char* stack_base) {
  auto top = reinterpret_cast<uintptr_t>(stack_base + kStackBytes) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 64);
  for (int i = 0; i < 6; ++i) frame[i] = 0;
  frame[6] = reinterpret_cast<uint64_t>(&kiln_emu_fiber_entry);
  frame[7] = 0;
  return frame;
}

Fiber& self(Worker& w) { return w.fibers[static_cast<size_t>(w.current)]; }

void yield_to_scheduler(Worker& w, Fiber& f, State s) {
  f.state = s;
  kiln_emu_switch(&f.sp, w.sched_sp);
}

void release(Worker& w, int begin, int end, State waiting) {
  for (int i = begin; i < end; ++i) {
    if (w.fibers[static_cast<size_t>(i)].state == waiting) {
      w.fibers[static_cast<size_t>(i)].state = State::kReady;
      w.ready.push_back(i);
    }
  }
}

const char* where(const Worker& w) {
  static thread_local char buf[256];
  const Fiber& f = w.fibers[static_cast<size_t>(w.current)];
  std::snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", w.job->name,
                blockIdx.x, blockIdx.y, blockIdx.z, f.tid.x, f.tid.y, f.tid.z);
  return buf;
}

// The checks of a warp-synchronous operation: kiln uses full masks only, which require every
// lane of a complete warp to take part.
Warp& warp_for_op(Worker& w, Fiber& f, unsigned mask, const char* op) {
  Warp& wp = w.warps[static_cast<size_t>(f.warp)];
  if (mask != kFullMask) fatal("%s: %s with mask %#x (only full masks are emulated)", where(w), op, mask);
  if (wp.size != 32) {
    fatal("%s: %s with a full mask in a partial warp of %d lanes (undefined)", where(w), op,
          wp.size);
  }
  if (wp.live != 32) {
    fatal("%s: %s with a full mask after %d lanes of the warp returned (undefined)", where(w),
          op, 32 - wp.live);
  }
  return wp;
}

void warp_barrier(Worker& w, Fiber& f, Warp& wp) {
  if (++wp.arrived == wp.live) {
    wp.arrived = 0;
    release(w, f.warp * 32, f.warp * 32 + wp.size, State::kAtWarpBarrier);
    return;
  }
  yield_to_scheduler(w, f, State::kAtWarpBarrier);
}

void deadlock(Worker& w) {
  int at_block = 0, at_warp = 0;
  for (int i = 0; i < w.n; ++i) {
    const State s = w.fibers[static_cast<size_t>(i)].state;
    at_block += s == State::kAtBlockBarrier;
    at_warp += s == State::kAtWarpBarrier;
  }
  fatal("kernel %s, block (%u,%u,%u): deadlock: %d threads wait at __syncthreads, %d at a warp "
        "barrier, %d returned (barrier in divergent code)",
        w.job->name, blockIdx.x, blockIdx.y, blockIdx.z, at_block, at_warp, w.n - w.live);
}

void run_block(Worker& w, const Job& job, uint64_t b) {
  blockIdx = uint3{static_cast<unsigned>(b % job.grid.x),
                   static_cast<unsigned>(b / job.grid.x % job.grid.y),
                   static_cast<unsigned>(b / (uint64_t{job.grid.x} * job.grid.y))};
  poison(w.dyn_smem, static_cast<size_t>(w.smem_end - w.dyn_smem));
  w.static_used = 0;
  w.static_taken = 0;
  w.static_vars.clear();
  const int bx = static_cast<int>(job.block.x), by = static_cast<int>(job.block.y);
  for (int i = 0; i < w.n; ++i) {
    Fiber& f = w.fibers[static_cast<size_t>(i)];
    f.sp = initial_context(w.stack(i));
    f.state = State::kReady;
    f.exchanges = 0;
    f.tid = uint3{static_cast<unsigned>(i % bx), static_cast<unsigned>(i / bx % by),
                  static_cast<unsigned>(i / (bx * by))};
    f.warp = i / 32;
    f.lane = i % 32;
  }
  for (size_t k = 0; k < w.warps.size(); ++k) {
    Warp& wp = w.warps[k];
    wp.size = std::min(32, w.n - static_cast<int>(k) * 32);
    wp.live = wp.size;
    wp.arrived = 0;
  }
  w.live = w.n;
  w.at_block_barrier = 0;
  w.ready.clear();
  w.ready_head = 0;
  for (int i = 0; i < w.n; ++i) w.ready.push_back(i);
  while (w.live > 0) {
    if (w.ready_head == w.ready.size()) deadlock(w);
    const int i = w.ready[w.ready_head++];
    Fiber& f = w.fibers[static_cast<size_t>(i)];
    if (f.state != State::kReady) continue;
    w.current = i;
    threadIdx = f.tid;
    f.state = State::kRunning;
    kiln_emu_switch(&w.sched_sp, f.sp);
  }
}

void run_blocks(const Job& job) {
  Worker& w = this_worker();
  w.job = &job;
  gridDim = job.grid;
  blockDim = job.block;
  w.n = static_cast<int>(job.block.x * job.block.y * job.block.z);
  w.fibers.assign(static_cast<size_t>(w.n), Fiber{});
  w.warps.assign(static_cast<size_t>((w.n + 31) / 32), Warp{});
  w.dyn_smem = w.smem_end - (job.smem + 15) / 16 * 16;
  for (uint64_t b = const_cast<Job&>(job).next.fetch_add(1); b < job.total_blocks;
       b = const_cast<Job&>(job).next.fetch_add(1)) {
    run_block(w, job, b);
  }
  w.job = nullptr;
}

// The worker threads besides the launching one; they sleep between launches.
class Pool {
 public:
  static Pool& get() {
    static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction
    return *p;
  }

  void run(Job& job) {
    const uint64_t helpers = std::min<uint64_t>(threads_.size(), job.total_blocks - 1);
    if (helpers > 0) {
      std::lock_guard<std::mutex> l(mu_);
      job_ = &job;
      wanted_ = static_cast<int>(helpers);
      busy_ = static_cast<int>(helpers);
      ++generation_;
      wake_.notify_all();
    }
    run_blocks(job);
    if (helpers > 0) {
      std::unique_lock<std::mutex> l(mu_);
      done_.wait(l, [&] { return busy_ == 0; });
      job_ = nullptr;
    }
  }

 private:
  Pool() {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* e = std::getenv("KILN_EMU_WORKERS")) n = std::atoi(e);
    for (int i = 1; i < std::max(n, 1); ++i) threads_.emplace_back([this] { loop(); });
    for (auto& t : threads_) t.detach();
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> l(mu_);
        wake_.wait(l, [&] { return generation_ != seen && wanted_ > 0; });
        seen = generation_;
        --wanted_;
        job = job_;
      }
      run_blocks(*job);
      std::lock_guard<std::mutex> l(mu_);
      if (--busy_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  Job* job_ = nullptr;
  int wanted_ = 0;
  int busy_ = 0;
  uint64_t generation_ = 0;
};

// The kernel registered as the launch's callee `name` (template arguments and qualifiers
// dropped) from `file`, cached by its address.
const KernelInfo& kernel_info(const void* kernel, const char* file, int line, const char* name) {
  static auto* by_address = new std::unordered_map<const void*, const KernelInfo*>();
  std::lock_guard<std::mutex> l(g_kernels_mu);
  if (auto it = by_address->find(kernel); it != by_address->end()) return *it->second;
  std::string base(name);
  if (const size_t lt = base.find('<'); lt != std::string::npos) base.resize(lt);
  while (!base.empty() && base.back() == ' ') base.pop_back();
  if (const size_t colon = base.rfind("::"); colon != std::string::npos) base.erase(0, colon + 2);
  const KernelInfo* found = nullptr;
  int same_name = 0;
  for (const KernelInfo& k : kernels()) {
    if (k.name != base) continue;
    ++same_name;
    if (k.file == file || found == nullptr) found = &k;
  }
  if (found == nullptr || (same_name > 1 && found->file != file)) {
    fatal("%s:%d: launch of %s: cu2cpp.py registered %s kernel of that name", file, line, name,
          found == nullptr ? "no" : "more than one");
  }
  by_address->emplace(kernel, found);
  return *found;
}

// The launch error of the configuration on the target architecture (cudaSuccess when it runs),
// with the reason in `why`: the limit broken, the size requested and the size allowed.
cudaError_t check_config(dim3 grid, dim3 block, size_t smem, const void* kernel,
                         const KernelInfo& k, std::string& why) {
  const char* sm = "sm_" KILN_EMU_STRINGIFY(KILN_EMU_SM);
  const unsigned b[3] = {block.x, block.y, block.z}, g[3] = {grid.x, grid.y, grid.z};
  char buf[320];
  auto fail = [&](cudaError_t e, const char* fmt, auto... args) {
    std::snprintf(buf, sizeof buf, fmt, args...);
    why = buf;
    return e;
  };
  for (int d = 0; d < 3; ++d) {
    if (b[d] == 0 || b[d] > kMaxBlockDim[d]) {
      return fail(cudaErrorInvalidConfiguration, "block dimension %c is %u, %s allows 1 to %u",
                  "xyz"[d], b[d], sm, kMaxBlockDim[d]);
    }
    if (g[d] == 0 || g[d] > kMaxGridDim[d]) {
      return fail(cudaErrorInvalidConfiguration, "grid dimension %c is %u, %s allows 1 to %u",
                  "xyz"[d], g[d], sm, kMaxGridDim[d]);
    }
  }
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads > kMaxThreadsPerBlock) {
    return fail(cudaErrorInvalidConfiguration, "%llu threads per block, %s allows %u",
                static_cast<unsigned long long>(threads), sm, kMaxThreadsPerBlock);
  }
  if (k.bounds > 0 && threads > static_cast<uint64_t>(k.bounds)) {
    return fail(cudaErrorLaunchOutOfResources,
                "%llu threads per block, its __launch_bounds__ allows %d",
                static_cast<unsigned long long>(threads), k.bounds);
  }
  const size_t st = k.static_bytes;
  if (st > static_cast<size_t>(kStaticSharedMax)) {
    return fail(cudaErrorInvalidValue, "%zu B of static shared memory, %s allows %d (ptxas "
                "refuses the kernel)", st, sm, kStaticSharedMax);
  }
  const int optin = max_dynamic_shared(kernel);
  if (optin >= 0 && st + static_cast<size_t>(optin) > static_cast<size_t>(kSharedOptin)) {
    return fail(cudaErrorInvalidValue, "its shared memory opt-in of %d B dynamic + %zu B static "
                "exceeds the %d B per block of %s (cudaFuncSetAttribute fails on hardware)",
                optin, st, kSharedOptin, sm);
  }
  const size_t allowed = optin >= 0 ? static_cast<size_t>(optin)
                                    : static_cast<size_t>(kSharedDefault) - st;
  if (smem > allowed) {
    return fail(cudaErrorInvalidValue, "%zu B of dynamic shared memory (+ %zu B static), it may "
                "use %zu B dynamic %s", smem, st, allowed,
                optin >= 0 ? "as it opted in with cudaFuncSetAttribute"
                           : "without a cudaFuncSetAttribute opt-in (48 KiB in all)");
  }
  return cudaSuccess;
}

// Records a launch that ran in the kernel's usage.
void record_usage(const KernelInfo& k, dim3 block, size_t smem) {
  std::lock_guard<std::mutex> l(g_kernels_mu);
  KernelUsage& u = const_cast<KernelInfo&>(k).usage;
  ++u.launches;
  u.max_threads = std::max(u.max_threads, block.x * block.y * block.z);
  u.max_dynamic = std::max(u.max_dynamic, smem);
  u.max_total = std::max(u.max_total, k.static_bytes + smem);
  u.last_total = k.static_bytes + smem;
}

// Under KILN_EMU_TRACE, at exit: the largest launch of every kernel that ran.
void print_usage() {
  std::lock_guard<std::mutex> l(g_kernels_mu);
  std::fprintf(stderr, "[cuda-emu] largest launch per kernel (sm_%d: %d threads, %d B shared "
               "memory per block opted in, %d B without):\n", KILN_EMU_SM, kMaxThreadsPerBlock,
               kSharedOptin, kSharedDefault);
  for (const KernelInfo& k : kernels()) {
    const KernelUsage& u = k.usage;
    if (u.launches == 0) continue;
    std::fprintf(stderr, "[cuda-emu]   %-30s %7zu B shared (%zu static + %zu dynamic), %4u "
                 "threads (bounds %d), %llu launches\n", k.name.c_str(), u.max_total,
                 k.static_bytes, u.max_dynamic, u.max_threads, k.bounds,
                 static_cast<unsigned long long>(u.launches));
  }
}

}  // namespace

const char* current_kernel() { return g_kernel.load(); }

bool register_kernel(const char* file, const char* name, int max_threads,
                     std::initializer_list<SharedDecl> shared) {
  KernelInfo k;
  k.file = file;
  k.name = name;
  k.bounds = max_threads;
  for (const SharedDecl& d : shared) {
    k.static_bytes = (k.static_bytes + d.align - 1) / d.align * d.align + d.bytes;
    k.static_sum += d.bytes;
  }
  k.usage.static_bytes = k.static_bytes;
  k.usage.bounds = max_threads;
  std::lock_guard<std::mutex> l(g_kernels_mu);
  kernels().push_back(std::move(k));
  return true;
}

bool kernel_usage(const char* name, KernelUsage* out) {
  std::lock_guard<std::mutex> l(g_kernels_mu);
  for (const KernelInfo& k : kernels()) {
    if (k.name == name) {
      *out = k.usage;
      return true;
    }
  }
  return false;
}

void run_kernel(const char* name, const char* file, int line, dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, const void* kernel, void (*body)(void*), void* arg) {
  static const bool trace = [] {
    const bool on = std::getenv("KILN_EMU_TRACE") != nullptr;
    if (on) std::atexit(print_usage);
    return on;
  }();
  const KernelInfo& info = kernel_info(kernel, file, line, name);
  std::string why;
  cudaError_t e = check_config(grid, block, smem, kernel, info, why);
  if (e == cudaSuccess && !valid_stream(stream)) {
    e = cudaErrorInvalidResourceHandle;
    why = "not a live stream";
  }
  if (trace || e != cudaSuccess) {
    std::fprintf(stderr, "[cuda-emu] %s:%d: %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>> (%zu B static "
                 "shared)%s%s%s%s\n", file, line, name, grid.x, grid.y, grid.z, block.x, block.y,
                 block.z, smem, info.static_bytes, e == cudaSuccess ? "" : ": launch fails with ",
                 e == cudaSuccess ? "" : cudaGetErrorName(e), e == cudaSuccess ? "" : ": ",
                 why.c_str());
  }
  if (e != cudaSuccess) {
    set_last_error(e);
    return;
  }
  record_usage(info, block, smem);
  Job job;
  job.name = name;
  job.info = &info;
  job.grid = grid;
  job.block = block;
  job.smem = smem;
  job.body = body;
  job.arg = arg;
  job.total_blocks = uint64_t{grid.x} * grid.y * grid.z;
  g_kernel.store(name);
  device_access_begin();
  Pool::get().run(job);
  device_access_end(name);
  g_kernel.store(nullptr);
}

void sync_block() {
  Worker& w = *t_worker;
  Fiber& f = self(w);
  if (++w.at_block_barrier == w.live) {
    w.at_block_barrier = 0;
    release(w, 0, w.n, State::kAtBlockBarrier);
    return;
  }
  yield_to_scheduler(w, f, State::kAtBlockBarrier);
}

void sync_warp(unsigned mask) {
  Worker& w = *t_worker;
  Fiber& f = self(w);
  warp_barrier(w, f, warp_for_op(w, f, mask, "__syncwarp"));
}

// Every lane of the warp publishes v (op names the caller in errors) and waits for the others;
// returns the 32 published values (slots alternate, so a fast lane cannot overwrite a value
// another lane has yet to read).
static const uint64_t* warp_publish(uint64_t v, unsigned mask, const char* op) {
  Worker& w = *t_worker;
  Fiber& f = self(w);
  Warp& wp = warp_for_op(w, f, mask, op);
  const uint32_t parity = f.exchanges++ & 1u;
  wp.slot[parity][f.lane] = v;
  warp_barrier(w, f, wp);
  return wp.slot[parity];
}

uint64_t warp_exchange(uint64_t v, int src, unsigned mask) {
  const int lane = lane_id();
  const uint64_t* slot = warp_publish(v, mask, "a warp shuffle");
  return slot[src >= 0 && src < 32 ? src : lane];
}

unsigned warp_match(uint64_t v, unsigned mask) {
  const uint64_t* slot = warp_publish(v, mask, "__match_any_sync");
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) m |= (slot[l] == v ? 1u : 0u) << l;
  return m;
}

unsigned warp_ballot(bool pred, unsigned mask) {
  const uint64_t* slot = warp_publish(pred ? 1 : 0, mask, "__ballot_sync");
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) m |= (slot[l] != 0 ? 1u : 0u) << l;
  return m;
}

int lane_id() { return self(*t_worker).lane; }

void* dynamic_shared_base() { return t_worker->dyn_smem; }

void* static_shared(const void* tag, size_t bytes, size_t align) {
  Worker& w = *t_worker;
  for (const auto& [t, p] : w.static_vars) {
    if (t == tag) return p;
  }
  const size_t off = (w.static_used + align - 1) / align * align;
  if (off + bytes > static_cast<size_t>(kStaticSharedMax)) {
    fatal("%s: more than %d bytes of static shared memory", where(w), kStaticSharedMax);
  }
  w.static_taken += bytes;
  if (w.static_taken > w.job->info->static_sum) {
    fatal("%s: %zu B of static shared memory taken, cu2cpp.py found %zu B declared in the "
          "kernel's call tree (a __shared__ declaration outside its .cu file?)",
          where(w), w.static_taken, w.job->info->static_sum);
  }
  void* p = w.static_arena + off;
  poison(p, bytes);
  w.static_used = off + bytes;
  w.static_vars.emplace_back(tag, p);
  return p;
}

}  // namespace kiln_emu

// A fiber's first frame: runs the kernel body as the current thread, then retires the thread
// (it counts as arrived at the block barrier from now on) and never returns.
extern "C" [[noreturn]] void kiln_emu_fiber_entry() {
  using namespace kiln_emu;
  Worker& w = *t_worker;
  w.job->body(w.job->arg);
  Fiber& f = self(w);
  Warp& wp = w.warps[static_cast<size_t>(f.warp)];
  f.state = State::kDone;
  --w.live;
  --wp.live;
  if (wp.arrived > 0) {
    fatal("%s: returned while %d lanes of its warp wait for it at a warp-synchronous operation",
          where(w), wp.arrived);
  }
  if (w.at_block_barrier > 0 && w.at_block_barrier == w.live) {
    w.at_block_barrier = 0;
    release(w, 0, w.n, State::kAtBlockBarrier);
  }
  void* discard = nullptr;
  kiln_emu_switch(&discard, w.sched_sp);
  __builtin_unreachable();
}
