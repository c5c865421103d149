#include "cluster/serve/server.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "cluster/gateway/gateway.h"
#include "cluster/generation.h"
#include "cluster/launch_plan.h"
#include "cluster/rank_model.h"
#include "cluster/serve/engine.h"
#include "cluster/serve/routes.h"
#include "cluster/text/chat_template.h"
#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

// SIGTERM and SIGINT (sent to the serving process) and SIGUSR1 (what mpirun forwards to every
// rank, and what `kiln launch` turns its SIGTERM into) drain the server. They are blocked in this
// thread and every thread it starts later; a watcher thread takes them with sigwait on rank 0, so
// no work happens in a signal handler. Other ranks leave them blocked: rank 0's shutdown plan
// ends them.
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  return set;
}

class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void(int)> on_signal)
      : thread_([this, f = std::move(on_signal)] {
          const sigset_t set = shutdown_signals();
          for (;;) {
            int sig = 0;
            if (sigwait(&set, &sig) != 0) continue;
            if (stopping_.load()) return;
            f(sig);
          }
        }) {}
  ~SignalWatcher() {
    stopping_.store(true);
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
}

}  // namespace

Status serve(const Topology& t, const ServeRuntime& runtime) {
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Metrics metrics;
  define_route_metrics(metrics);
  Scheduler::define_metrics(metrics);
  ServerState state;
  state.metrics = &metrics;
  // The id clients send as "model": model.name, else the file's stem (the directory's name for
  // an HF directory or a file called model.gguf).
  state.model_id = t.model.name;
  if (state.model_id.empty()) {
    std::filesystem::path p = std::filesystem::path(t.model.path).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    state.model_id = p.stem() == "model" ? p.parent_path().filename().string() : p.stem().string();
    if (std::filesystem::is_directory(p)) state.model_id = p.filename().string();
  }
  if (state.model_id.empty()) state.model_id = "kiln";
  state.metrics_require_key = t.server.metrics_require_key;
  state.created = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  if (!t.server.api_key_file.empty()) {
    KILN_ASSIGN_OR_RETURN(state.api_keys, read_api_keys(t.server.api_key_file));
  }

  std::unique_ptr<gateway::Gateway> gw;
  auto start_gateway = [&](const World& w) -> Status {
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
    o.write_timeout = std::chrono::milliseconds(static_cast<int64_t>(t.server.write_timeout_s * 1000));
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
  };

  // Load progress of every rank, for /health/ready and one log line per rank per second.
  std::vector<Clock::time_point> logged;
  auto on_progress = [&](int rank, int64_t done, int64_t total) {
    std::lock_guard lock(state.load_mu);
    if (rank < 0 || rank >= static_cast<int>(state.ranks.size())) return;
    state.ranks[static_cast<size_t>(rank)].loaded_bytes = done;
    state.ranks[static_cast<size_t>(rank)].total_bytes = total;
    logged.resize(state.ranks.size());
    if (done == total || Clock::now() - logged[static_cast<size_t>(rank)] > std::chrono::seconds(1)) {
      spdlog::info("rank {}: loaded {} of {}", rank, format_bytes(static_cast<double>(done)),
                   format_bytes(static_cast<double>(total)));
      logged[static_cast<size_t>(rank)] = Clock::now();
    }
  };
  auto ranked = load_rank_model(t.model.path, runtime.tensor, t.parallel.pipeline,
                                t.parallel.layer_split, start_gateway, on_progress,
                                DeviceChoice{t.backend == "cuda" ? Device::kCuda : Device::kCpu,
                                             -1});
  if (!ranked.ok()) return ranked.status();
  KimiLinearModel& model = *ranked->model;
  const World& w = ranked->world->world();
  const ModelConfig& config = model.config();

  // Cache geometry: the same on every rank (page ids are global).
  const int64_t context = served_context(t, config);
  const int64_t page = t.cache.page_tokens;
  const int64_t cache_tokens = cache_tokens_per_rank(t, config);
  const int64_t n_pages =
      std::max<int64_t>(1, cache_tokens / page + (cache_tokens % page != 0 ? 1 : 0));
  // These allocate host or device memory, checked first against what is free; a rank that
  // cannot ends the job, named on rank 0 (the error names the keys that sized it).
  auto made = model.new_paged_state(t.scheduler.max_sequences, n_pages, page);
  Status allocated = made.ok() ? model.reserve(t.scheduler.max_batch_tokens)
                               : made.status().with_context("cache sized by " +
                                                            cache_size_keys(t, config));
  if (!allocated.ok() && made.ok()) {
    allocated = allocated.with_context(
        fmt::format("workspace for scheduler.max_batch_tokens={}", t.scheduler.max_batch_tokens));
  }
  if (w.size == 1 && !allocated.ok()) return allocated;  // one rank: a plain error, as for loading
  agree_or_abort(*ranked->world, allocated);
  std::unique_ptr<StateCache> cache = std::move(made).value();
  cpu::ThreadPool pool(runtime.threads);
  pool.set_exact_activations(runtime.exact_activations);

  if (w.rank != 0) {
    Communicator& control = ranked->world->world_comm();
    return run_worker(model, pool, *cache, control);
  }

  auto tokenizer = load_tokenizer(model.checkpoint());
  if (!tokenizer.ok()) return tokenizer.status();
  auto chat = chat_options(model.checkpoint());
  if (!chat.ok()) return chat.status();
  state.chat = std::move(chat).value();
  state.limits.context = context;
  state.limits.max_tokens = t.server.max_tokens;
  state.limits.max_n = t.server.max_n;
  state.limits.max_top_logprobs = t.server.max_top_logprobs;
  state.limits.max_stop_strings = t.server.max_stop_strings;
  state.limits.max_stop_length = t.server.max_stop_length;
  state.limits.vocab_size = static_cast<int32_t>(config.vocab_size);
  state.limits.model_id = state.model_id;
  for (int32_t id = 0; id < tokenizer->vocab_size(); ++id) {
    if (tokenizer->is_special(id) && !tokenizer->token_bytes(id).empty()) {
      state.limits.special_texts.push_back(tokenizer->token_bytes(id));
    }
  }

  Engine::Options eo;
  eo.scheduler.max_batch_tokens = t.scheduler.max_batch_tokens;
  eo.scheduler.max_sequences = t.scheduler.max_sequences;
  // A prompt chunk must fit next to a decode token of every other sequence.
  eo.scheduler.prefill_chunk = std::min(t.scheduler.prefill_chunk,
                                        t.scheduler.max_batch_tokens - t.scheduler.max_sequences + 1);
  eo.scheduler.max_queue = t.scheduler.max_queue;
  eo.scheduler.n_pages = n_pages;
  eo.scheduler.page_tokens = page;
  eo.scheduler.max_context = context;
  eo.step_timeout_s = t.scheduler.step_timeout_s;
  if (w.tp_size > 1) eo.data_plane = &ranked->world->tp();
  Communicator* control = w.size > 1 ? &ranked->world->world_comm() : nullptr;
  Engine engine(model, pool, *cache, control, *tokenizer, eo, &metrics);

  const StateSizes& sizes = cache->sizes();
  spdlog::info(
      "capacity per rank: {} sequences x {} tokens; KDA state {} per sequence, MLA cache {} "
      "pages of {} tokens ({} per token, {} in all); {} tokens of cache = {:.1f} full-context "
      "sequences",
      t.scheduler.max_sequences, context, format_bytes(static_cast<double>(sizes.kda_bytes_per_slot())),
      n_pages, page, format_bytes(static_cast<double>(sizes.mla_bytes_per_token())),
      format_bytes(static_cast<double>(cache->bytes())), n_pages * page,
      static_cast<double>(n_pages * page) / static_cast<double>(context));
  if (model.device() == Device::kCuda) {
    spdlog::info("rank 0 runs on GPU {}: {} of weights, {} of cache on the device", w.gpu,
                 format_bytes(static_cast<double>(model.device_weight_bytes())),
                 format_bytes(static_cast<double>(cache->bytes())));
  }

  {
    std::lock_guard lock(state.load_mu);
    for (RankLoad& r : state.ranks) r.ready = true;
  }
  state.tokenizer.store(&*tokenizer);
  state.engine.store(&engine);

  // A rank that died or hung leaves this rank's step waiting in a collective forever. Every
  // open request then gets an error event, the gateway stops accepting, and the process exits
  // non-zero so mpirun ends the job (it kills the other ranks).
  std::atomic<bool> failing{false};
  auto fail_job = [&](const std::string& why) {
    if (failing.exchange(true)) return;
    spdlog::error("{}: ending every request and the job", why);
    state.failed.store(true);
    {
      std::lock_guard lock(state.load_mu);
      state.failure = why;
    }
    engine.fail("the server failed: a rank stopped responding");
    if (gw) gw->stop_accepting();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // sessions write the errors
    std::fflush(nullptr);
    std::_Exit(1);
  };
  SignalWatcher watcher([&](int sig) {
    // mpirun sends SIGTERM to the survivors when a rank dies; a step already stuck that long
    // means this is such a failure, not a request to drain.
    if (w.size > 1 && engine.seconds_in_step() > 0.25) {
      fail_job(fmt::format("signal {} while a step has waited {:.1f} s on the other ranks", sig,
                           engine.seconds_in_step()));
    }
    spdlog::info("signal {}: draining for up to {} s", sig, t.scheduler.drain_timeout_s);
    if (gw) gw->stop_accepting();
    engine.drain(Clock::now() + std::chrono::milliseconds(
                                    static_cast<int64_t>(t.scheduler.drain_timeout_s * 1000)));
  });
  std::atomic<bool> done{false};
  std::thread watchdog([&] {
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const double in_step = engine.seconds_in_step();
      if (in_step > t.scheduler.step_timeout_s) {
        fail_job(fmt::format("a step has run for {:.1f} s (scheduler.step_timeout_s = {})",
                             in_step, t.scheduler.step_timeout_s));
      }
    }
  });
  spdlog::info("ready: model {} ({} rank(s), tensor {} x pipeline {})", state.model_id, w.size,
               w.tp_size, w.pp_size);
  Status s = engine.run();
  done.store(true);
  watchdog.join();
  // Let the sessions write what the engine produced last, then close everything.
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (gw && gw->open_connections() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (gw) gw->stop();
  state.engine.store(nullptr);
  spdlog::info("stopped");
  return s;
}

}  // namespace kiln::serve
