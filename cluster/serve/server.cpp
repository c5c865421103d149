#include "cluster/serve/server.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "cluster/gateway/gateway.h"
#include "cluster/engine/generation.h"
#include "cluster/launch_plan.h"
#include "cluster/rank_model.h"
#include "cluster/engine/engine.h"
#include "cluster/serve/routes.h"
#include "cluster/serve/shutdown.h"
#include "cluster/engine/worker.h"
#include "cluster/text/chat_template.h"
#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
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

}  // namespace

Status serve(const Topology& t, const ServeRuntime& runtime) {
  // Blocked before any thread starts, so only the SignalWatchers take them (shutdown.h).
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const Launcher launcher = detect_launcher();

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

  if (w.rank != 0) return serve_worker(t, launcher, *ranked, pool, *cache);

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
  eo.heartbeat_s = heartbeat_interval_s(t.scheduler.step_timeout_s);
  // Set below, once the gateway and the engine exist; the engine calls it only from run().
  std::function<void(const ShutdownSignal&, const std::string&)> begin_shutdown;
  int reported_signals = 0;  // engine thread
  eo.on_rank_signals = [&](int drain_requests, int launcher_terms) {
    if (drain_requests + launcher_terms <= reported_signals) return;
    reported_signals = drain_requests + launcher_terms;
    ShutdownSignal s{SIGTERM, /*from_launcher=*/launcher_terms > 0};
    begin_shutdown(s, fmt::format("another rank got SIGTERM or SIGINT ({} from mpirun, {} from "
                                  "elsewhere; told in a heartbeat answer)",
                                  launcher_terms, drain_requests));
  };
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
  auto fail_job = [&](const std::string& why,
                      const std::string& client_message = "the server failed: a rank stopped "
                                                          "responding") {
    if (failing.exchange(true)) return;
    spdlog::error("{}: ending every request and the job", why);
    state.failed.store(true);
    {
      std::lock_guard lock(state.load_mu);
      state.failure = why;
    }
    engine.fail(client_message);
    if (gw) gw->stop_accepting();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // sessions write the errors
    std::fflush(nullptr);
    std::_Exit(1);
  };
  // Shutdown (shutdown.h): a drain, bounded by mpirun's SIGKILL when the signal came from it.
  std::mutex cut_mu;
  Clock::time_point cut_at = Clock::time_point::max();  // streams still open then are ended
  begin_shutdown = [&](const ShutdownSignal& sig, const std::string& what) {
    const DrainDecision d = decide_drain(sig, t.scheduler.drain_timeout_s, launcher.kill_grace_s,
                                         engine.seconds_in_step(), w.size > 1);
    if (d.rank_failed) {
      fail_job(fmt::format("{} while a step has waited {:.1f} s on the other ranks", what,
                           engine.seconds_in_step()));
      return;
    }
    const auto now = Clock::now();
    if (std::isfinite(d.cut_s)) {
      spdlog::info("{}: draining for up to {:.2f} s (mpirun sends SIGKILL {:g} s after its "
                   "SIGTERM; open requests end by {:.2f} s)",
                   what, d.drain_s, launcher.kill_grace_s, d.cut_s);
      std::lock_guard lock(cut_mu);
      cut_at = std::min(cut_at, now + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(d.cut_s)));
    } else {
      spdlog::info("{}: draining for up to {:g} s", what, d.drain_s);
    }
    if (gw) gw->stop_accepting();
    engine.drain(now + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(d.drain_s)));
  };
  SignalWatcher watcher(launcher,
                        [&](const ShutdownSignal& sig) { begin_shutdown(sig, describe(sig)); });
  std::atomic<bool> done{false};
  bool cut_done = false;  // guarded by cut_mu
  std::thread watchdog([&] {
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const double in_step = engine.seconds_in_step();
      if (in_step > t.scheduler.step_timeout_s) {
        fail_job(fmt::format("a step or heartbeat has waited {:.1f} s on the other ranks "
                             "(scheduler.step_timeout_s = {})",
                             in_step, t.scheduler.step_timeout_s));
      }
      bool cut = false;
      {
        std::lock_guard lock(cut_mu);
        if (Clock::now() >= cut_at && !cut_done) cut = cut_done = true;
      }
      // The engine has not finished draining (a step outlasts the drain, or waits on a rank
      // that is gone): end the requests and this rank before mpirun's SIGKILL does.
      if (cut) fail_job("mpirun's SIGKILL is near", "the server is shutting down");
    }
  });
  spdlog::info("ready: model {} ({} rank(s), tensor {} x pipeline {})", state.model_id, w.size,
               w.tp_size, w.pp_size);
  Status s = engine.run();
  done.store(true);
  watchdog.join();
  // Let the sessions write what the engine produced last, then close everything.
  Clock::time_point until = Clock::now() + std::chrono::seconds(2);
  {
    std::lock_guard lock(cut_mu);
    until = std::min(until, cut_at);  // before mpirun's SIGKILL
  }
  while (gw && gw->open_connections() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (gw) gw->stop();
  state.engine.store(nullptr);
  spdlog::info("stopped");
  return s;
}

}  // namespace kiln::serve
