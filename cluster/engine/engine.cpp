#include "cluster/engine/engine.h"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "cluster/engine/worker.h"
#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace

Engine::Engine(KimiLinearModel& model, cpu::ThreadPool& pool, StateCache& state,
               Communicator* control, const text::Tokenizer& tokenizer, Options options,
               Metrics* metrics)
    : model_(model),
      pool_(pool),
      state_(state),
      control_(control),
      options_(options),
      metrics_(metrics),
      scheduler_(options.scheduler, model.config().vocab_size, tokenizer, metrics) {
  KILN_CHECK(state.n_slots() >= options.scheduler.max_sequences);
  KILN_CHECK(state.n_pages() >= options.scheduler.n_pages);
  KILN_CHECK(state.page_tokens() == options.scheduler.page_tokens);
  stats_ = scheduler_.stats();
  if (metrics_ != nullptr) {
    const std::vector<double> step = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,   0.25,   0.5,   1,    2.5,   10};
    metrics_->define("step_time_seconds", Metrics::Type::kHistogram,
                     "Wall time of one engine step on this rank.", step);
    metrics_->define("allreduce_time_seconds", Metrics::Type::kHistogram,
                     "Time in tensor-parallel collectives during one engine step on this rank.",
                     step);
  }
}

Status Engine::submit(std::shared_ptr<EngineRequest> request) {
  KILN_CHECK(request && request->stream && !request->prompt.empty());
  KILN_RETURN_IF_ERROR(scheduler_.check_fits(*request));
  if (!request->params.sampling.seed) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    request->params.sampling.seed = rng();
  }
  {
    std::lock_guard lock(mu_);
    if (draining_ || failed_) {
      return Status(StatusCode::kUnavailable, "the server is shutting down");
    }
    const int64_t queued = static_cast<int64_t>(inbox_.size()) + waiting_;
    if (queued >= options_.scheduler.max_queue) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("the queue is full ({} requests waiting)", queued));
    }
    live_.push_back(request->stream);
    inbox_.push_back(std::move(request));
  }
  cv_.notify_one();
  return {};
}

void Engine::fail(const std::string& message) {
  std::lock_guard lock(mu_);
  failed_ = true;
  for (const auto& stream : live_) {
    Event e;
    e.kind = Event::Kind::kError;
    e.status = 503;
    e.message = message;
    stream->push(std::move(e));
  }
  live_.clear();
}

double Engine::seconds_in_step() const {
  const int64_t began = step_began_ns_.load();
  return began == 0 ? 0.0 : static_cast<double>(now_ns() - began) * 1e-9;
}

void Engine::drain(Clock::time_point deadline) {
  {
    std::lock_guard lock(mu_);
    deadline_ = draining_ ? std::min(deadline_, deadline) : deadline;  // the earliest holds
    draining_ = true;
  }
  cv_.notify_one();
}

void Engine::wake() { cv_.notify_one(); }

EngineHealth Engine::health() const {
  EngineHealth h;
  h.running = running_.load();
  std::lock_guard lock(mu_);
  h.draining = draining_;
  h.failed = failed_;
  h.seconds_since_step = static_cast<double>(now_ns() - last_step_ns_.load()) * 1e-9;
  const bool pending = busy_.load() || !inbox_.empty();
  h.stalled = h.running && pending && h.seconds_since_step > options_.step_timeout_s;
  return h;
}

SchedulerStats Engine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool Engine::step() {
  scheduler_.next_step(plan_.batch);
  if (plan_.batch.empty()) return false;
  const auto t0 = Clock::now();
  step_began_ns_.store(now_ns());
  const double comm0 = options_.data_plane != nullptr ? options_.data_plane->busy_seconds() : 0.0;
  if (control_ != nullptr && control_->size() > 1) send_plan(*control_, plan_);
  Status s = model_.forward(pool_, state_, plan_.batch, logits_);
  // A plan the model rejects means the scheduler and the state disagree: a bug, and the other
  // ranks are in the same forward, so the whole job must end.
  KILN_CHECK_MSG(s.ok(), "engine step failed");
  scheduler_.complete_step(logits_.data());
  if (metrics_ != nullptr) {
    metrics_->observe("step_time_seconds",
                      std::chrono::duration<double>(Clock::now() - t0).count(), R"(rank="0")");
    if (options_.data_plane != nullptr) {
      metrics_->observe("allreduce_time_seconds", options_.data_plane->busy_seconds() - comm0,
                        R"(rank="0")");
    }
  }
  last_step_ns_.store(now_ns());
  step_began_ns_.store(0);
  return true;
}

void Engine::heartbeat_if_due() {
  if (control_ == nullptr || control_->size() <= 1) return;
  const int64_t began = now_ns();
  if (static_cast<double>(began - last_heartbeat_ns_) * 1e-9 < options_.heartbeat_s) return;
  // A rank that does not answer leaves this wait open: the watchdog times it like a step.
  step_began_ns_.store(began);
  send_plan(*control_, StepPlan{StepPlan::Kind::kHeartbeat, {}});
  const SignalReport report = heartbeat_ack(*control_, SignalReport{});
  step_began_ns_.store(0);
  last_heartbeat_ns_ = now_ns();
  if (report.any() && options_.on_rank_signals) {
    options_.on_rank_signals(report.drain_requests, report.launcher_terms);
  }
}

Status Engine::run() { return loop(false, {}); }

Status Engine::run_until_idle(const std::function<void()>& after_step) {
  return loop(true, after_step);
}

Status Engine::loop(bool until_idle, const std::function<void()>& after_step) {
  last_step_ns_.store(now_ns());
  // Ready (health().running) once every rank has answered a first heartbeat: from then on the
  // others watch rank 0 with the short silence limit (worker.h).
  last_heartbeat_ns_ = 0;
  heartbeat_if_due();
  running_.store(true);
  bool drain_logged = false;
  for (;;) {
    std::deque<std::shared_ptr<EngineRequest>> arrived;
    bool draining;
    Clock::time_point deadline;
    {
      std::unique_lock lock(mu_);
      if (until_idle && inbox_.empty() && scheduler_.idle()) break;
      if (inbox_.empty() && scheduler_.idle() && !draining_) {
        busy_.store(false);
        last_step_ns_.store(now_ns());
        cv_.wait_for(lock, std::chrono::milliseconds(100));
      }
      arrived.swap(inbox_);
      // Until the next step's stats, the arrivals count as waiting: submit() then never
      // accepts more than the scheduler's queue takes, so a full queue is always a synchronous
      // 429 (never an error event after a stream's 200).
      waiting_ += static_cast<int64_t>(arrived.size());
      draining = draining_;
      deadline = deadline_;
    }
    busy_.store(true);
    for (auto& r : arrived) {
      Status s = scheduler_.enqueue(r);
      if (!s.ok()) {
        Event e;
        e.kind = Event::Kind::kError;
        e.status = s.code() == StatusCode::kResourceExhausted ? 429 : 400;
        e.message = s.message();
        r->stream->push(std::move(e));
      }
    }
    if (draining) {
      if (!drain_logged) {
        spdlog::info("draining: {} request(s) running, {} waiting", scheduler_.stats().running_requests,
                     scheduler_.stats().waiting_requests);
        drain_logged = true;
      }
      if (Clock::now() >= deadline && !scheduler_.idle()) {
        spdlog::warn("drain deadline passed: ending {} request(s)",
                     scheduler_.stats().running_requests + scheduler_.stats().waiting_requests);
        scheduler_.abort_all(503, "the server is shutting down", "drain");
      }
      if (scheduler_.idle()) break;
    }
    heartbeat_if_due();
    step();
    if (after_step) after_step();
    std::lock_guard lock(mu_);
    stats_ = scheduler_.stats();
    waiting_ = stats_.waiting_requests;
    std::erase_if(live_, [](const std::shared_ptr<RequestStream>& s) {
      return s->closed() || s->cancelled();
    });
  }
  if (control_ != nullptr && control_->size() > 1) send_plan(*control_, StepPlan{StepPlan::Kind::kShutdown, {}});
  running_.store(false);
  std::lock_guard lock(mu_);
  stats_ = scheduler_.stats();
  return {};
}

}  // namespace kiln::serve
