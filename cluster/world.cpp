// World bootstrap: MPI initialisation, TP/PP communicator construction by MPI_Comm_split, the
// job-wide abort handler, and agree_or_abort for failures every rank must hear about. Without MPI
// it builds the one-rank world from LocalCommunicators.
#include "cluster/world.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cluster/local_communicator.h"
#include "cluster/mpi_communicator.h"
#include "kernels/base/check.h"

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

void print_failures(const std::vector<std::string>& lines, int size) {
  std::fprintf(stderr, "kiln: %zu of %d rank(s) failed; aborting the job\n", lines.size(), size);
  for (const auto& line : lines) std::fprintf(stderr, "kiln: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace

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

std::unique_ptr<Communicator> split(int color, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  KILN_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm));
  return std::make_unique<MpiCommunicator>(comm, /*owned=*/true);
}

}  // namespace

WorldContext::~WorldContext() {
  pp_.reset();
  tp_.reset();
  world_comm_.reset();
  if (owns_mpi_) MPI_Finalize();
}

StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                   int pipeline) {
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

  MPI_Comm world_dup = MPI_COMM_NULL;
  KILN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_dup));
  context->world_comm_ = std::make_unique<MpiCommunicator>(world_dup, /*owned=*/true);
  context->tp_ = split(/*color=*/w.pp_stage, /*key=*/w.tp_rank);
  context->pp_ = split(/*color=*/w.tp_rank, /*key=*/w.pp_stage);
  KILN_CHECK(context->tp_->rank() == w.tp_rank && context->tp_->size() == tensor);
  KILN_CHECK(context->pp_->rank() == w.pp_stage && context->pp_->size() == pipeline);
  return context;
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
                                                   int pipeline) {
  if (tensor == 0) tensor = 1;
  KILN_RETURN_IF_ERROR(check_shape(tensor, pipeline, 1).with_context("built without MPI"));
  std::unique_ptr<WorldContext> context(new WorldContext());
  context->world_.host = local_host_name();
  context->world_comm_ = std::move(make_local_group(1)[0]);
  context->tp_ = std::move(make_local_group(1)[0]);
  context->pp_ = std::move(make_local_group(1)[0]);
  return context;
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
