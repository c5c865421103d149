// The ranks other than 0 in a serving job, and the heartbeat that lets them and rank 0 notice each
// other's silence (architecture.md "A rank failing").
//
// Rank 0 sends a step plan every step, and every heartbeat_interval_s (between steps, busy or idle)
// a heartbeat plan, which every other rank answers (heartbeat_ack, a collective), so:
// * rank 0 notices a stopped or dead rank even when idle: its watchdog times the answer like a
//   step (scheduler.step_timeout_s);
// * a rank that has heard nothing from rank 0 (no plan, no heartbeat, no step finishing) for
//   rank0_silence_limit_s ends the job, naming rank 0 as silent: every thread of a stopped rank 0
//   stops, its watchdog included, so only the others can notice;
// * a rank that got SIGTERM or SIGINT tells rank 0 in its next answer, and rank 0 drains.
#pragma once

#include <functional>
#include <string>

#include "cluster/engine/engine.h"
#include "shard/communicator.h"

namespace kiln::serve {

// Rank 0 sends a heartbeat this often: min(1 s, step_timeout_s / 4).
double heartbeat_interval_s(double step_timeout_s);
// A rank ends the job after hearing nothing from rank 0 this long: step_timeout_s + 1 s (rank
// 0's own watchdog fires first when it is alive, and ends the requests properly).
double rank0_silence_limit_s(double step_timeout_s);

// Shutdown signals a rank got since start-up, as reported to rank 0.
struct SignalReport {
  int drain_requests = 0;  // SIGTERM or SIGINT from anyone but the launcher
  int launcher_terms = 0;  // SIGTERM from mpirun's daemon (SIGKILL follows)
  bool any() const { return drain_requests > 0 || launcher_terms > 0; }
};

// Collective over `control`, every rank right after a heartbeat plan: the sum of every rank's
// report (rank 0 passes an empty one).
SignalReport heartbeat_ack(Communicator& control, const SignalReport& mine);

struct WorkerOptions {
  // Nothing from rank 0 this long ends the job (rank0_silence_limit_s), counted from its first
  // message; before that, from the start, first_message_timeout_s (rank 0 may still be loading
  // its tokenizer; it reports ready only once every rank has answered its first heartbeat).
  double silence_timeout_s = 31;
  double first_message_timeout_s = 60;
  // Called once, from a watchdog thread, with a message naming rank 0 as silent (run_worker does
  // not return by itself then). Null: abort_world (the job ends).
  std::function<void(const std::string&)> on_silence;
  // This rank's report for each heartbeat answer. Null: nothing to report.
  std::function<SignalReport()> report;
};

// Ranks other than 0: run every plan, answer every heartbeat, until the shutdown plan arrives.
Status run_worker(KimiLinearModel& model, cpu::ThreadPool& pool, StateCache& state,
                  Communicator& control, const WorkerOptions& options = {});

}  // namespace kiln::serve
