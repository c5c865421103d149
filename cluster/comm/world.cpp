// World bootstrap: MPI initialisation, the rank's GPU (CUDA ranks), TP/PP communicator
// construction by MPI_Comm_split (NCCL for groups of distinct GPUs), the job-wide abort handler,
// and agree_or_abort for failures every rank must hear about. Without MPI it builds the one-rank
// world from LocalCommunicators.
#include "cluster/comm/world.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cluster/comm/local_communicator.h"
#include "cluster/comm/mpi_communicator.h"
#include "kernels/base/check.h"

#ifdef KILN_HAVE_CUDA
#include "cluster/comm/nccl_communicator.h"
#include "cluster/comm/staging_communicator.h"
#include "kernels/cuda/runtime.h"
#endif

namespace kiln {
namespace {

Status check_shape(int tensor, int pipeline, int size) {
  if (tensor < 1 || pipeline < 1 || static_cast<int64_t>(tensor) * pipeline != size) {
    return invalid_argument(
        "tensor={} x pipeline={} = {} ranks, but the job has {} rank(s) (mpirun -np {})", tensor,
        pipeline, static_cast<int64_t>(tensor) * pipeline, size, size);
  }
  return {};
}

// One "kiln: error:" line naming the first failing rank and why, then one line per other failure.
void print_failures(const std::vector<std::string>& lines, int size) {
  if (lines.empty()) {
    std::fprintf(stderr, "kiln: error: a rank failed; aborting the job\n");
  } else {
    std::fprintf(stderr, "kiln: error: %s (%zu of %d rank(s) failed; aborting the job)\n",
                 lines[0].c_str(), lines.size(), size);
  }
  for (size_t i = 1; i < lines.size(); ++i) std::fprintf(stderr, "kiln: %s\n", lines[i].c_str());
  std::fflush(stderr);
}

#ifdef KILN_HAVE_CUDA
// Opens the GPU DeviceChoice names for this rank; sets w.gpu.
Status open_gpu(DeviceChoice choice, World& w, std::unique_ptr<cuda::Context>& out) {
  const char* rank_gpus = std::getenv("KILN_RANK_GPUS");
  KILN_ASSIGN_OR_RETURN(const int gpu, choose_rank_gpu(choice.gpu, rank_gpus, w.rank,
                                                       w.local_rank, cuda::device_count()));
  KILN_ASSIGN_OR_RETURN(out, cuda::Context::create(gpu));
  w.gpu = gpu;
  return {};
}
#endif

}  // namespace

StatusOr<int> parse_rank_gpus(std::string_view value, int world_rank) {
  std::vector<int> gpus;
  size_t start = 0;
  while (true) {
    const size_t comma = value.find(',', start);
    const std::string_view entry =
        value.substr(start, comma == std::string_view::npos ? comma : comma - start);
    int gpu = -1;
    const auto [end, error] = std::from_chars(entry.data(), entry.data() + entry.size(), gpu);
    if (entry.empty() || error != std::errc() || end != entry.data() + entry.size() || gpu < 0) {
      return invalid_argument(
          "KILN_RANK_GPUS='{}': entry {} ('{}') is not a CUDA device number (expected "
          "comma-separated integers >= 0, one per world rank)",
          value, gpus.size(), entry);
    }
    gpus.push_back(gpu);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (world_rank < 0 || world_rank >= static_cast<int>(gpus.size())) {
    return invalid_argument(
        "KILN_RANK_GPUS='{}' lists {} GPU(s), but this is world rank {}: it needs one entry per "
        "rank of the job",
        value, gpus.size(), world_rank);
  }
  return gpus[static_cast<size_t>(world_rank)];
}

StatusOr<int> choose_rank_gpu(int requested, const char* rank_gpus, int world_rank, int local_rank,
                              int device_count) {
  if (requested >= 0) return requested;
  if (rank_gpus != nullptr && rank_gpus[0] != '\0') return parse_rank_gpus(rank_gpus, world_rank);
  if (device_count <= 0) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("backend cuda: no CUDA device is visible to world rank {} (and "
                              "neither a GPU nor KILN_RANK_GPUS names one)",
                              world_rank));
  }
  return local_rank % device_count;
}

void WorldContext::GpuDeleter::operator()(cuda::Context* context) const {
#ifdef KILN_HAVE_CUDA
  delete context;
#else
  KILN_CHECK(context == nullptr);  // a build without CUDA never makes a cuda::Context
#endif
}

#ifdef KILN_HAVE_MPI
namespace {

// "rank R (host H)" of this process, for the abort handler. A file-level variable because the
// handler is a plain function pointer (check.h); written by init_world before installing it.
char g_abort_label[320] = "rank ? (host ?)";

void abort_job(const std::string& message) {
  std::fprintf(stderr, "kiln: %s: aborting the job: %s\n", g_abort_label, message.c_str());
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized != 0 && finalized == 0) MPI_Abort(MPI_COMM_WORLD, 1);
}

// Initialises MPI unless the caller did; returns whether this call did (and must finalise).
bool ensure_mpi(int* argc, char*** argv) {
  int initialized = 0;
  KILN_MPI_CHECK(MPI_Initialized(&initialized));
  bool owned = false;
  if (initialized == 0) {
    int provided = 0;
    KILN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
    owned = true;
  }
  int level = 0;
  KILN_MPI_CHECK(MPI_Query_thread(&level));
  KILN_CHECK_MSG(level >= MPI_THREAD_FUNNELED,
                 fmt::format("MPI thread level {} is below MPI_THREAD_FUNNELED", level));
  KILN_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  return owned;
}

// A failure that some ranks may meet alone (no such GPU, NCCL refusing to start) must not leave
// the others waiting in the next collective. Collective over MPI_COMM_WORLD: returns OK when every
// rank's `local` is OK; otherwise every rank returns the same Status, the code and message of the
// lowest failing rank prefixed with "rank R (host H): ". A failing rank waits at most kAgreeGrace
// for the others (they may be stuck where MPI cannot reach them, inside NCCL's bootstrap), then
// ends the job naming itself.
constexpr auto kAgreeGrace = std::chrono::seconds(60);

Status agree_on_world(const Status& local, const World& w) {
  int mine = local.ok() ? w.size : w.rank;
  int first_failed = w.size;
  MPI_Request request = MPI_REQUEST_NULL;
  KILN_MPI_CHECK(
      MPI_Iallreduce(&mine, &first_failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &request));
  if (local.ok()) {
    KILN_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
  } else {
    const auto deadline = std::chrono::steady_clock::now() + kAgreeGrace;
    int done = 0;
    KILN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    while (done == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        abort_job(fmt::format("{} (the other ranks did not answer within {} s)", local.to_string(),
                              kAgreeGrace.count()));
        std::abort();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      KILN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    }
  }
  if (first_failed >= w.size) return {};
  struct {
    int code;
    char text[512];
  } message{};
  if (w.rank == first_failed) {
    message.code = static_cast<int>(local.code());
    std::snprintf(message.text, sizeof(message.text), "rank %d (host %s): %s", w.rank,
                  w.host.c_str(), local.message().c_str());
  }
  KILN_MPI_CHECK(MPI_Bcast(&message, sizeof(message), MPI_BYTE, first_failed, MPI_COMM_WORLD));
  message.text[sizeof(message.text) - 1] = '\0';
  return Status(static_cast<StatusCode>(message.code), message.text);
}

#ifdef KILN_HAVE_CUDA
// Collective over `comm`: true when no two of its ranks use the same GPU, identified by host name
// and PCI bus id (device numbers alone are ambiguous under per-rank CUDA_VISIBLE_DEVICES).
bool distinct_gpus(MPI_Comm comm, const World& w, const cuda::Context& gpu) {
  constexpr int kKeyBytes = MPI_MAX_PROCESSOR_NAME + 64;
  char bus[64] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus), gpu.device()) != cudaSuccess) {
    std::snprintf(bus, sizeof(bus), "device %d", gpu.device());
  }
  char key[kKeyBytes] = {};
  std::snprintf(key, sizeof(key), "%s/%s", w.host.c_str(), bus);
  int size = 0;
  KILN_MPI_CHECK(MPI_Comm_size(comm, &size));
  std::vector<char> all(static_cast<size_t>(size) * kKeyBytes);
  KILN_MPI_CHECK(MPI_Allgather(key, kKeyBytes, MPI_CHAR, all.data(), kKeyBytes, MPI_CHAR, comm));
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) {
    const char* k = all.data() + static_cast<size_t>(r) * kKeyBytes;
    keys.emplace_back(k, strnlen(k, kKeyBytes));
  }
  std::sort(keys.begin(), keys.end());
  return std::adjacent_find(keys.begin(), keys.end()) == keys.end();
}
#endif

struct Group {
  std::unique_ptr<Communicator> comm;
  bool nccl = false;
};

// Collective over MPI_COMM_WORLD: the group of the ranks with this `color`, ordered by `key`. With
// a GPU, a group of two or more ranks on distinct GPUs gets an NcclCommunicator (made over the
// group's MPI communicator, which is then freed); a group of two or more GPU ranks sharing a
// GPU, an MpiCommunicator behind host staging (device pointers, as NCCL); otherwise an
// MpiCommunicator.
StatusOr<Group> make_group(int color, int key, const World& w, const cuda::Context* gpu) {
  MPI_Comm comm = MPI_COMM_NULL;
  KILN_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm));
  Group group;
  auto mpi = std::make_unique<MpiCommunicator>(comm, /*owned=*/true);
#ifdef KILN_HAVE_CUDA
  if (gpu != nullptr && mpi->size() > 1 && distinct_gpus(comm, w, *gpu)) {
    KILN_ASSIGN_OR_RETURN(group.comm, NcclCommunicator::create(comm, *gpu));
    group.nccl = true;
    return group;
  }
  if (gpu != nullptr && mpi->size() > 1) {  // the model hands it device buffers
    group.comm = stage_through_host(std::move(mpi), *gpu);
    return group;
  }
#else
  (void)w;
  (void)gpu;
#endif
  group.comm = std::move(mpi);
  return group;
}

std::string describe_collectives(int ranks, int nccl_ranks) {
  if (ranks == 0) return "none (groups of one rank)";
  if (nccl_ranks == ranks) return "NCCL on device memory";
  if (nccl_ranks == 0) return "MPI through host memory (the ranks of a group share a GPU)";
  return fmt::format(
      "NCCL on {} of {} ranks, MPI through host memory on the others (their group shares a GPU)",
      nccl_ranks, ranks);
}

// Collective over MPI_COMM_WORLD: rank 0 prints, once for the job, which transport the TP and PP
// groups of CUDA ranks use.
void log_collectives(const World& w, bool tp_nccl, bool pp_nccl) {
  const int mine[4] = {w.tp_size > 1 ? 1 : 0, tp_nccl ? 1 : 0, w.pp_size > 1 ? 1 : 0,
                       pp_nccl ? 1 : 0};
  int sums[4] = {};
  KILN_MPI_CHECK(MPI_Reduce(mine, sums, 4, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD));
  if (w.rank != 0) return;
  std::fprintf(stderr, "kiln: cuda ranks: tensor-parallel collectives: %s; pipeline: %s\n",
               describe_collectives(sums[0], sums[1]).c_str(),
               describe_collectives(sums[2], sums[3]).c_str());
  std::fflush(stderr);
}

}  // namespace

WorldContext::~WorldContext() {
  pp_.reset();
  tp_.reset();
  world_comm_.reset();
  gpu_.reset();
  if (owns_mpi_) MPI_Finalize();
}

StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                   int pipeline, DeviceChoice device) {
  KILN_RETURN_IF_ERROR(device_available(device.device));
  std::unique_ptr<WorldContext> context(new WorldContext());
  context->owns_mpi_ = ensure_mpi(argc, argv);
  World& w = context->world_;
  KILN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &w.rank));
  KILN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &w.size));
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  int host_length = 0;
  KILN_MPI_CHECK(MPI_Get_processor_name(host, &host_length));
  w.host.assign(host, host_length);
  std::snprintf(g_abort_label, sizeof(g_abort_label), "rank %d (host %s)", w.rank, host);
  set_abort_handler(&abort_job);
  if (tensor == 0 && pipeline >= 1 && w.size % pipeline == 0) tensor = w.size / pipeline;
  KILN_RETURN_IF_ERROR(check_shape(tensor, pipeline, w.size));

  w.tp_size = tensor;
  w.pp_size = pipeline;
  w.tp_rank = w.rank % tensor;
  w.pp_stage = w.rank / tensor;
  MPI_Comm node = MPI_COMM_NULL;
  KILN_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank, MPI_INFO_NULL, &node));
  KILN_MPI_CHECK(MPI_Comm_rank(node, &w.local_rank));
  KILN_MPI_CHECK(MPI_Comm_size(node, &w.local_size));
  KILN_MPI_CHECK(MPI_Comm_free(&node));

#ifdef KILN_HAVE_CUDA
  if (device.device == Device::kCuda) {
    std::unique_ptr<cuda::Context> gpu;
    KILN_RETURN_IF_ERROR(agree_on_world(open_gpu(device, w, gpu), w));
    context->gpu_.reset(gpu.release());
    context->device_ = Device::kCuda;
  }
#endif

  MPI_Comm world_dup = MPI_COMM_NULL;
  KILN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_dup));
  context->world_comm_ = std::make_unique<MpiCommunicator>(world_dup, /*owned=*/true);
  // Every rank takes part in both splits; a group's failure is agreed over the world before the
  // next split, so no rank is left waiting in it.
  auto tp = make_group(/*color=*/w.pp_stage, /*key=*/w.tp_rank, w, context->gpu());
  KILN_RETURN_IF_ERROR(agree_on_world(tp.status(), w));
  context->tp_ = std::move(tp->comm);
  auto pp = make_group(/*color=*/w.tp_rank, /*key=*/w.pp_stage, w, context->gpu());
  KILN_RETURN_IF_ERROR(agree_on_world(pp.status(), w));
  context->pp_ = std::move(pp->comm);
  KILN_CHECK(context->tp_->rank() == w.tp_rank && context->tp_->size() == tensor);
  KILN_CHECK(context->pp_->rank() == w.pp_stage && context->pp_->size() == pipeline);
  if (context->gpu() != nullptr) log_collectives(w, tp->nccl, pp->nccl);
  return context;
}

void abort_world(const std::string& message) {
  abort_job(message);
  std::_Exit(1);  // MPI was not (or no longer) up
}

void agree_or_abort(const WorldContext& context, const Status& local_status) {
  constexpr int kMessageBytes = 512;  // per rank, NUL included
  const World& w = context.world();
  int failed = local_status.ok() ? 0 : 1;
  int any_failed = 0;
  KILN_MPI_CHECK(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  if (any_failed == 0) return;

  char mine[kMessageBytes] = {};
  if (failed != 0) {
    std::snprintf(mine, sizeof(mine), "rank %d (host %s): %s", w.rank, w.host.c_str(),
                  local_status.to_string().c_str());
  }
  std::vector<char> all(w.rank == 0 ? static_cast<size_t>(kMessageBytes) * w.size : 0);
  KILN_MPI_CHECK(MPI_Gather(mine, kMessageBytes, MPI_CHAR, all.data(), kMessageBytes, MPI_CHAR, 0,
                            MPI_COMM_WORLD));
  if (w.rank == 0) {
    std::vector<std::string> lines;
    for (int r = 0; r < w.size; ++r) {
      const char* text = all.data() + static_cast<size_t>(r) * kMessageBytes;
      if (text[0] != '\0') lines.emplace_back(text, strnlen(text, kMessageBytes));
    }
    print_failures(lines, w.size);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  // Other ranks wait for rank 0's MPI_Abort to end them; this barrier completes only if rank 0
  // never aborts, and then each rank aborts after a grace period so the job cannot hang.
  MPI_Request request = MPI_REQUEST_NULL;
  KILN_MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int done = 0;
  while (done == 0 && std::chrono::steady_clock::now() < deadline) {
    KILN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

#else  // no MPI: a world of one rank

namespace {

std::string local_host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

}  // namespace

WorldContext::~WorldContext() = default;

StatusOr<std::unique_ptr<WorldContext>> init_world(int* /*argc*/, char*** /*argv*/, int tensor,
                                                   int pipeline, DeviceChoice device) {
  KILN_RETURN_IF_ERROR(device_available(device.device));
  if (tensor == 0) tensor = 1;
  KILN_RETURN_IF_ERROR(check_shape(tensor, pipeline, 1).with_context("built without MPI"));
  std::unique_ptr<WorldContext> context(new WorldContext());
  context->world_.host = local_host_name();
#ifdef KILN_HAVE_CUDA
  if (device.device == Device::kCuda) {
    std::unique_ptr<cuda::Context> gpu;
    KILN_RETURN_IF_ERROR(open_gpu(device, context->world_, gpu));
    context->gpu_.reset(gpu.release());
    context->device_ = Device::kCuda;
  }
#endif
  context->world_comm_ = std::move(make_local_group(1)[0]);
  context->tp_ = std::move(make_local_group(1)[0]);
  context->pp_ = std::move(make_local_group(1)[0]);
  return context;
}

void abort_world(const std::string& message) {
  std::fprintf(stderr, "kiln: aborting: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

void agree_or_abort(const WorldContext& context, const Status& local_status) {
  if (local_status.ok()) return;
  const World& w = context.world();
  print_failures({fmt::format("rank {} (host {}): {}", w.rank, w.host, local_status.to_string())},
                 w.size);
  std::exit(1);
}

#endif  // KILN_HAVE_MPI

}  // namespace kiln
