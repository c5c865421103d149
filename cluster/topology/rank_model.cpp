#include "cluster/topology/rank_model.h"

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#ifdef KILN_HAVE_MPI
#include "cluster/comm/mpi_communicator.h"
#endif

namespace kiln {
namespace {

using Clock = std::chrono::steady_clock;

#ifdef KILN_HAVE_MPI
constexpr int kProgressTag = 7301;  // point-to-point on MPI_COMM_WORLD, rank r → rank 0

// Rank 0's side: receives the other ranks' progress messages ({done, total}; done = −1 marks a
// rank's last message) while rank 0 loads its own share, until every rank has sent its last one.
// Rank 0's loading makes no MPI calls, so this thread is the only one calling MPI meanwhile
// (MPI_THREAD_SERIALIZED).
class ProgressRelay {
 public:
  ProgressRelay(int size, RankProgress report)
      : thread_([this, size, report = std::move(report)] {
          int open = size - 1;
          while (open > 0) {
            int flag = 0;
            MPI_Status st;
            KILN_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kProgressTag, MPI_COMM_WORLD, &flag, &st));
            if (flag == 0) {
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
              continue;
            }
            int64_t msg[2] = {0, 0};
            KILN_MPI_CHECK(MPI_Recv(msg, 2, MPI_INT64_T, st.MPI_SOURCE, kProgressTag,
                                    MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            if (msg[0] < 0) {
              --open;
            } else if (report) {
              report(st.MPI_SOURCE, msg[0], msg[1]);
            }
          }
        }) {}
  void join() { thread_.join(); }

 private:
  std::thread thread_;
};

void send_progress(int64_t done, int64_t total) {
  int64_t msg[2] = {done, total};
  KILN_MPI_CHECK(MPI_Send(msg, 2, MPI_INT64_T, 0, kProgressTag, MPI_COMM_WORLD));
}
#endif

}  // namespace

StatusOr<RankModel> load_rank_model(const std::string& path, int tensor, int pipeline,
                                    const std::vector<int64_t>& layer_split,
                                    const std::function<Status(const World&)>& on_joined,
                                    const RankProgress& on_progress, DeviceChoice device) {
  RankModel r;
  KILN_ASSIGN_OR_RETURN(r.world, init_world(nullptr, nullptr, tensor, pipeline, device));
  const World& w = r.world->world();
  Status status = on_joined ? on_joined(w) : Status();
  if (w.size == 1) {  // a single rank holds the whole model
    KILN_RETURN_IF_ERROR(status);
    ParallelContext ctx;
    if (on_progress) ctx.progress = [&](int64_t d, int64_t t) { on_progress(0, d, t); };
    ctx.device = r.world->device();
    ctx.gpu = r.world->gpu();
    auto model = KimiLinearModel::load(path, ctx);
    if (!model.ok()) return model.status();
    r.model = std::move(model).value();
    return r;
  }
  // Progress: rank 0 hears from the others while it loads its own share; the others send at most
  // one message per quarter second.
  LoadProgress progress;
#ifdef KILN_HAVE_MPI
  std::optional<ProgressRelay> relay;
  Clock::time_point last{};
  if (w.rank == 0) {
    relay.emplace(w.size, on_progress);
    if (on_progress) progress = [&](int64_t d, int64_t t) { on_progress(0, d, t); };
  } else {
    progress = [&](int64_t d, int64_t t) {
      if (d == t || Clock::now() - last > std::chrono::milliseconds(250)) {
        send_progress(d, t);
        last = Clock::now();
      }
    };
  }
#endif
  // Every rank opens the checkpoint and plans; any failure is reported by agree_or_abort.
  auto ck = Checkpoint::open(path);
  if (status.ok() && !ck.ok()) status = ck.status();
  if (status.ok()) {
    auto plan = plan_rank((*ck)->config(), {w.tp_size, w.pp_size, layer_split}, w.rank,
                            DType::kF32, {});
    if (!plan.ok()) {
      status = plan.status();
    } else {
      // On cuda the model runs on the world's GPU context, whose stream the NCCL groups use;
      // tp and pp each take device pointers where their device_memory() is true.
      ParallelContext ctx{*plan,    w.tp_size > 1 ? &r.world->tp() : nullptr,
                          w.pp_size > 1 ? &r.world->pp() : nullptr,
                          progress, r.world->device(), r.world->gpu()};
      auto model = KimiLinearModel::load(path, ctx);
      if (model.ok()) {
        r.model = std::move(model).value();
      } else {
        status = model.status();
      }
    }
  }
#ifdef KILN_HAVE_MPI
  if (w.rank == 0) {
    relay->join();
  } else {
    send_progress(-1, 0);
  }
#endif
  agree_or_abort(*r.world, status);
  return r;
}

}  // namespace kiln
