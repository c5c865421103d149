#include "cluster/engine/worker.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "cluster/comm/world.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Watches, from its own thread, how long ago the worker last heard from rank 0.
class SilenceWatch {
 public:
  explicit SilenceWatch(const WorkerOptions& options)
      : options_(options), start_(Clock::now()), thread_([this] { watch(); }) {}
  ~SilenceWatch() {
    done_.store(true);
    thread_.join();
  }
  void heard() {
    heard_ns_.store(Clock::now().time_since_epoch().count());
    heard_once_.store(true);
  }

 private:
  void watch() {
    while (!done_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const bool once = heard_once_.load();
      const Clock::time_point since =
          once ? Clock::time_point(Clock::duration(heard_ns_.load())) : start_;
      const double limit = once ? options_.silence_timeout_s : options_.first_message_timeout_s;
      const double silent = seconds_since(since);
      if (silent <= limit || done_.load()) continue;
      const std::string message = fmt::format(
          "rank 0 is silent: no step plan or heartbeat from it for {:.1f} s (limit {:.1f} s{}); "
          "it is stopped, hung or unreachable",
          silent, limit, once ? ", scheduler.step_timeout_s + 1" : " before its first message");
      if (options_.on_silence) {
        options_.on_silence(message);
      } else {
        abort_world(message);
      }
      return;
    }
  }

  const WorkerOptions& options_;
  const Clock::time_point start_;
  std::atomic<int64_t> heard_ns_{0};
  std::atomic<bool> heard_once_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace

double heartbeat_interval_s(double step_timeout_s) { return std::min(1.0, step_timeout_s / 4); }

double rank0_silence_limit_s(double step_timeout_s) { return step_timeout_s + 1.0; }

SignalReport heartbeat_ack(Communicator& control, const SignalReport& mine) {
  float counts[2] = {static_cast<float>(mine.drain_requests),
                     static_cast<float>(mine.launcher_terms)};
  control.all_reduce_sum(counts, 2);
  return SignalReport{static_cast<int>(counts[0]), static_cast<int>(counts[1])};
}

Status run_worker(KimiLinearModel& model, cpu::ThreadPool& pool, StateCache& state,
                  Communicator& control, const WorkerOptions& options) {
  SilenceWatch watch(options);
  std::vector<float> logits;
  for (;;) {
    StepPlan plan = receive_plan(control);
    watch.heard();
    switch (plan.kind) {
      case StepPlan::Kind::kShutdown:
        return {};
      case StepPlan::Kind::kHeartbeat:
        heartbeat_ack(control, options.report ? options.report() : SignalReport{});
        break;
      case StepPlan::Kind::kRun:
        KILN_RETURN_IF_ERROR(model.forward(pool, state, plan.batch, logits));
        break;
    }
    watch.heard();
  }
}

}  // namespace kiln::serve
