// Engine: the serving loop. On rank 0 it owns the scheduler: requests arrive from gateway threads
// through submit(); each step the scheduler's Batch is broadcast to every rank as the step plan
// (control communicator), every rank runs the forward over it (which applies its resets and new
// pages to the rank's state), and rank 0 samples from the logits. An idle engine sleeps on a
// condition variable (rank 0) or in broadcast_idle (other ranks), so an idle server keeps no core
// busy. Draining (SIGTERM) stops admissions, lets running
// requests finish until a deadline, ends the rest with an error, and then sends every rank the
// shutdown plan.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "cluster/serve/metrics.h"
#include "cluster/engine/request.h"
#include "cluster/engine/scheduler.h"
#include "cluster/engine/step_plan.h"
#include "kernels/cpu/thread_pool.h"
#include "shard/model.h"

namespace kiln::serve {

struct EngineHealth {
  bool running = false;    // run() has started and every rank answered its first heartbeat
  bool draining = false;
  bool stalled = false;    // work pending and no step finished within step_timeout
  bool failed = false;     // a step failed: the engine stopped
  double seconds_since_step = 0;
};

class Engine {
 public:
  struct Options {
    SchedulerOptions scheduler;
    double step_timeout_s = 30;
    // This rank's TP group, whose busy time per step is exported as allreduce_time_seconds.
    Communicator* data_plane = nullptr;
    // With other ranks: a heartbeat plan goes out between steps this often, busy or idle
    // (worker.h); its answer is timed like a step (seconds_in_step).
    double heartbeat_s = 1;
    // Called on the engine thread when a heartbeat's answer reports shutdown signals that other
    // ranks got (drain_requests, launcher_terms summed over the ranks).
    std::function<void(int drain_requests, int launcher_terms)> on_rank_signals;
  };
  // control: all ranks (rank 0 = this one), or null on a single rank. metrics may be null.
  Engine(KimiLinearModel& model, cpu::ThreadPool& pool, StateCache& state, Communicator* control,
         const text::Tokenizer& tokenizer, Options options, Metrics* metrics);

  // Any thread. Unavailable while draining or stopped; ResourceExhausted when the queue is full;
  // InvalidArgument when the request can never fit (choices or pages beyond the server's).
  // A request without a seed gets one here.
  Status submit(std::shared_ptr<EngineRequest> request);
  // Any thread (also from a signal-watching thread): stop admitting; finish running and queued
  // work until `deadline`, then end what is left with an error; then run() returns. Called again,
  // the earlier deadline holds.
  void drain(std::chrono::steady_clock::time_point deadline);
  // Any thread: wakes the loop (e.g. after a cancellation) so it is noticed promptly.
  void wake();
  // Any thread, when a rank has failed and the engine thread may be stuck in a collective: every
  // request not yet finished gets an error event (503, `message`), new ones are refused and
  // health reports "failed". The engine thread is not waited for.
  void fail(const std::string& message);
  // Seconds the current step has been running (0 between steps): a step that waits on a dead or
  // hung rank never ends.
  double seconds_in_step() const;

  // The engine thread (the one that makes this rank's MPI calls): serves until drained.
  Status run();
  // In-process use (kiln generate): the calling thread is the engine thread until every submitted
  // request has ended, calling after_step (if set) after each step so the caller consumes its
  // requests' events there; then, with other ranks, sends them the shutdown plan. No drain, no
  // idle wait.
  Status run_until_idle(const std::function<void()>& after_step = {});

  EngineHealth health() const;
  SchedulerStats stats() const;

 private:
  // Serves until drained, or with until_idle until nothing is queued or running.
  Status loop(bool until_idle, const std::function<void()>& after_step);
  bool step();  // one scheduler step; false when there was nothing to run
  void heartbeat_if_due();  // with other ranks: a heartbeat plan every options_.heartbeat_s

  KimiLinearModel& model_;
  cpu::ThreadPool& pool_;
  StateCache& state_;
  Communicator* control_;
  Options options_;
  Metrics* metrics_;
  Scheduler scheduler_;
  StepPlan plan_;  // the step under way (kRun), its batch's storage reused step after step
  std::vector<float> logits_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<EngineRequest>> inbox_;
  int64_t waiting_ = 0;  // scheduler's queue length as of the last step, plus arrivals since
  SchedulerStats stats_;
  bool draining_ = false;
  bool failed_ = false;
  std::chrono::steady_clock::time_point deadline_;
  std::atomic<bool> running_{false};
  std::atomic<int64_t> last_step_ns_{0};
  std::atomic<int64_t> step_began_ns_{0};  // 0 between steps (and heartbeats)
  int64_t last_heartbeat_ns_ = 0;            // engine thread: when the last heartbeat was answered
  std::vector<std::shared_ptr<RequestStream>> live_;  // submitted, not yet closed (guarded by mu_)
  std::atomic<bool> busy_{false};
};

}  // namespace kiln::serve
