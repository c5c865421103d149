#include "cluster/serve/server.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "cluster/api/routes.h"
#include "cluster/gateway/gateway.h"
#include "cluster/engine/generation.h"
#include "cluster/engine/engine.h"
#include "cluster/serve/rank0_run.h"
#include "cluster/serve/shutdown.h"
#include "cluster/engine/worker.h"
#include "cluster/topology/launch_plan.h"
#include "cluster/topology/rank_model.h"
#include "cluster/api/routes.h"
#include "text/chat_template.h"
#include "kernels/base/check.h"
#include "text/chat_template.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
}

// The id clients send as "model": model.name, else the file's stem (the directory's name for an
// HF directory or a file called model.gguf); "kiln" when that is empty too.
std::string served_model_id(const Topology& t) {
  std::string id = t.model.name;
  if (id.empty()) {
    std::filesystem::path p = std::filesystem::path(t.model.path).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    id = p.stem() == "model" ? p.parent_path().filename().string() : p.stem().string();
    if (std::filesystem::is_directory(p)) id = p.filename().string();
  }
  if (id.empty()) id = "kiln";
  return id;
}

// Phase 1 (every rank): the metric families and what the routes know before anything loads.
Status init_server_state(const Topology& t, Metrics& metrics, ServerState& state) {
  define_route_metrics(metrics);
  Scheduler::define_metrics(metrics);
  state.metrics = &metrics;
  state.model_id = served_model_id(t);
  state.metrics_require_key = t.server.metrics_require_key;
  state.created = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  if (!t.server.api_key_file.empty()) {
    KILN_ASSIGN_OR_RETURN(state.api_keys, read_api_keys(t.server.api_key_file));
  }
  return {};
}

// Phase 2 (every rank, once the world exists, before loading): one load entry per rank; rank 0
// starts the gateway into `gw`, which answers 503 until the engine is published.
Status start_gateway(const Topology& t, const World& w, ServerState& state,
                     std::unique_ptr<gateway::Gateway>& gw) {
  state.world_size = w.size;
  {
    std::lock_guard lock(state.load_mu);
    for (int r = 0; r < w.size; ++r) state.ranks.push_back({r, 0, 0, false});
  }
  if (w.rank != 0) return {};
  gateway::GatewayOptions o;
  o.host = t.server.host;
  o.port = t.server.port;
  o.max_body_bytes = t.server.max_body_bytes;
  o.max_header_bytes = t.server.max_header_bytes;
  o.read_timeout = std::chrono::milliseconds(static_cast<int64_t>(t.server.read_timeout_s * 1000));
  o.write_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(t.server.write_timeout_s * 1000));
  o.max_connections = t.server.max_connections;
  o.cors_allow_origins = t.server.cors_allow_origins;
  o.error_body = [](int status, const std::string& message) {
    ApiError e = bad_request(message);
    e.status = status;
    return error_body(e);
  };
  gw = std::make_unique<gateway::Gateway>(o, make_routes(state));
  KILN_RETURN_IF_ERROR(gw->start());
  spdlog::info("listening on http://{}:{} (loading {} rank(s))", t.server.host, gw->port(), w.size);
  return {};
}

// Phase 3 (every rank): load progress of every rank, for /health/ready and one log line per rank
// per second (called on rank 0 only, see load_rank_model).
class LoadProgress {
 public:
  explicit LoadProgress(ServerState& state) : state_(state) {}
  void operator()(int rank, int64_t done, int64_t total) {
    std::lock_guard lock(state_.load_mu);
    if (rank < 0 || rank >= static_cast<int>(state_.ranks.size())) return;
    state_.ranks[static_cast<size_t>(rank)].loaded_bytes = done;
    state_.ranks[static_cast<size_t>(rank)].total_bytes = total;
    logged_.resize(state_.ranks.size());
    if (done == total ||
        Clock::now() - logged_[static_cast<size_t>(rank)] > std::chrono::seconds(1)) {
      spdlog::info("rank {}: loaded {} of {}", rank, format_bytes(static_cast<double>(done)),
                   format_bytes(static_cast<double>(total)));
      logged_[static_cast<size_t>(rank)] = Clock::now();
    }
  }

 private:
  ServerState& state_;
  std::vector<Clock::time_point> logged_;  // guarded by state_.load_mu
};

// The cache geometry: the same on every rank (page ids are global).
struct CacheGeometry {
  int64_t context = 0;  // tokens a sequence may reach
  int64_t page = 0;     // tokens per MLA cache page
  int64_t n_pages = 0;
};

CacheGeometry cache_geometry(const Topology& t, const ModelConfig& config) {
  CacheGeometry g;
  g.context = served_context(t, config);
  g.page = t.cache.page_tokens;
  const int64_t cache_tokens = cache_tokens_per_rank(t, config);
  g.n_pages = std::max<int64_t>(1, cache_tokens / g.page + (cache_tokens % g.page != 0 ? 1 : 0));
  return g;
}

// Phase 4 (every rank): the sequence state and the forward's workspace. These allocate host or
// device memory, checked first against what is free; a rank that cannot ends the job, named on
// rank 0 (the error names the keys that sized it). One rank: a plain error, as for loading.
StatusOr<std::unique_ptr<StateCache>> allocate_state(const Topology& t, RankModel& ranked,
                                                     const CacheGeometry& g) {
  KimiLinearModel& model = *ranked.model;
  const ModelConfig& config = model.config();
  auto made = model.new_paged_state(t.scheduler.max_sequences, g.n_pages, g.page);
  Status allocated =
      made.ok() ? model.reserve(t.scheduler.max_batch_tokens)
                : made.status().with_context("cache sized by " + cache_size_keys(t, config));
  if (!allocated.ok() && made.ok()) {
    allocated = allocated.with_context(
        fmt::format("workspace for scheduler.max_batch_tokens={}", t.scheduler.max_batch_tokens));
  }
  if (ranked.world->world().size == 1 && !allocated.ok()) return allocated;
  agree_or_abort(*ranked.world, allocated);
  return std::move(made).value();
}

// A rank other than 0: runs the plans until the shutdown plan (worker.h). Its SIGTERM or SIGINT
// is told to rank 0 in the next heartbeat answer; SIGUSR1 is left to rank 0, which mpirun
// forwards it to as well.
Status serve_worker(const Topology& t, const Launcher& launcher, RankModel& ranked,
                    cpu::ThreadPool& pool, StateCache& cache) {
  const int rank = ranked.world->world().rank;
  std::atomic<int> drain_requests{0};
  std::atomic<int> launcher_terms{0};
  SignalWatcher watcher(launcher, [&](const ShutdownSignal& s) {
    if (s.sig == SIGUSR1) return;
    (s.from_launcher ? launcher_terms : drain_requests).fetch_add(1);
    spdlog::info("rank {}: {}: telling rank 0 in the next heartbeat answer", rank, describe(s));
  });
  WorkerOptions o;
  o.silence_timeout_s = rank0_silence_limit_s(t.scheduler.step_timeout_s);
  o.report = [&] { return SignalReport{drain_requests.load(), launcher_terms.load()}; };
  return run_worker(*ranked.model, pool, cache, ranked.world->world_comm(), o);
}

// Phase 5 (rank 0): what the routes check requests against, from the topology, the model and its
// tokenizer.
Status set_request_limits(const Topology& t, const KimiLinearModel& model,
                          const text::Tokenizer& tokenizer, int64_t context, ServerState& state) {
  auto chat = chat_options(model.checkpoint());
  if (!chat.ok()) return chat.status();
  state.chat = std::move(chat).value();
  state.limits.context = context;
  state.limits.max_tokens = t.server.max_tokens;
  state.limits.max_n = t.server.max_n;
  state.limits.max_top_logprobs = t.server.max_top_logprobs;
  state.limits.max_stop_strings = t.server.max_stop_strings;
  state.limits.max_stop_length = t.server.max_stop_length;
  state.limits.vocab_size = static_cast<int32_t>(model.config().vocab_size);
  state.limits.model_id = state.model_id;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.is_special(id) && !tokenizer.token_bytes(id).empty()) {
      state.limits.special_texts.push_back(tokenizer.token_bytes(id));
    }
  }
  return {};
}

Engine::Options engine_options(const Topology& t, const CacheGeometry& g) {
  Engine::Options eo;
  eo.scheduler.max_batch_tokens = t.scheduler.max_batch_tokens;
  eo.scheduler.max_sequences = t.scheduler.max_sequences;
  // A prompt chunk must fit next to a decode token of every other sequence.
  eo.scheduler.prefill_chunk = std::min(
      t.scheduler.prefill_chunk, t.scheduler.max_batch_tokens - t.scheduler.max_sequences + 1);
  eo.scheduler.max_queue = t.scheduler.max_queue;
  eo.scheduler.n_pages = g.n_pages;
  eo.scheduler.page_tokens = g.page;
  eo.scheduler.max_context = g.context;
  eo.step_timeout_s = t.scheduler.step_timeout_s;
  eo.heartbeat_s = heartbeat_interval_s(t.scheduler.step_timeout_s);
  return eo;
}

void log_capacity(const Topology& t, const KimiLinearModel& model, const World& w,
                  const StateCache& cache, const CacheGeometry& g) {
  const StateSizes& sizes = cache.sizes();
  spdlog::info(
      "capacity per rank: {} sequences x {} tokens; KDA state {} per sequence, MLA cache {} "
      "pages of {} tokens ({} per token, {} in all); {} tokens of cache = {:.1f} full-context "
      "sequences",
      t.scheduler.max_sequences, g.context,
      format_bytes(static_cast<double>(sizes.kda_bytes_per_slot())), g.n_pages, g.page,
      format_bytes(static_cast<double>(sizes.mla_bytes_per_token())),
      format_bytes(static_cast<double>(cache.bytes())), g.n_pages * g.page,
      static_cast<double>(g.n_pages * g.page) / static_cast<double>(g.context));
  if (model.device() == Device::kCuda) {
    spdlog::info("rank 0 runs on GPU {}: {} of weights, {} of cache on the device", w.gpu,
                 format_bytes(static_cast<double>(model.device_weight_bytes())),
                 format_bytes(static_cast<double>(cache.bytes())));
  }
}

}  // namespace

// The phases, in order: state and metrics; the world, the gateway (rank 0) and the model;
// the sequence state; then a worker loop on ranks > 0, or on rank 0 the tokenizer, the engine and
// its run until drained (Rank0Run).
Status serve(const Topology& t, const ServeRuntime& runtime) {
  // Blocked before any thread starts, so only the SignalWatchers take them (shutdown.h).
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const Launcher launcher = detect_launcher();

  Metrics metrics;
  ServerState state;
  KILN_RETURN_IF_ERROR(init_server_state(t, metrics, state));

  std::unique_ptr<gateway::Gateway> gw;
  LoadProgress progress(state);
  auto ranked = load_rank_model(
      t.model.path, runtime.tensor, t.parallel.pipeline, t.parallel.layer_split,
      [&](const World& w) { return start_gateway(t, w, state, gw); },
      [&](int rank, int64_t done, int64_t total) { progress(rank, done, total); },
      DeviceChoice{t.backend == "cuda" ? Device::kCuda : Device::kCpu, -1});
  if (!ranked.ok()) return ranked.status();
  KimiLinearModel& model = *ranked->model;
  const World& w = ranked->world->world();

  const CacheGeometry geometry = cache_geometry(t, model.config());
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<StateCache> cache, allocate_state(t, *ranked, geometry));
  cpu::ThreadPool pool(runtime.threads);
  pool.set_exact_activations(runtime.exact_activations);

  if (w.rank != 0) return serve_worker(t, launcher, *ranked, pool, *cache);

  auto tokenizer = load_tokenizer(model.checkpoint());
  if (!tokenizer.ok()) return tokenizer.status();
  KILN_RETURN_IF_ERROR(set_request_limits(t, model, *tokenizer, geometry.context, state));

  Engine::Options eo = engine_options(t, geometry);
  Rank0Run* rank0 = nullptr;  // set once the engine exists; the engine calls this only in run()
  eo.on_rank_signals = [&rank0](int drain_requests, int launcher_terms) {
    rank0->on_rank_signals(drain_requests, launcher_terms);
  };
  if (w.tp_size > 1) eo.data_plane = &ranked->world->tp();
  Communicator* control = w.size > 1 ? &ranked->world->world_comm() : nullptr;
  Engine engine(model, pool, *cache, control, *tokenizer, eo, &metrics);
  log_capacity(t, model, w, *cache, geometry);

  {
    std::lock_guard lock(state.load_mu);
    for (RankLoad& r : state.ranks) r.ready = true;
  }
  state.tokenizer.store(&*tokenizer);
  state.engine.store(&engine);
  Rank0Run run(t, launcher, w, state, engine, gw.get());
  rank0 = &run;
  return run.run();
}

}  // namespace kiln::serve
