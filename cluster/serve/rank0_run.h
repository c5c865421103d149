// Rank 0 of a serving job from "ready" to exit: runs the engine until it has drained, under the
// shutdown rules (shutdown.h) and a watchdog on the time a step waits on the other ranks, then
// lets the sessions write what is left and stops the gateway.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>

#include "cluster/api/routes.h"
#include "cluster/comm/world.h"
#include "cluster/gateway/gateway.h"
#include "cluster/engine/engine.h"
#include "cluster/serve/shutdown.h"
#include "cluster/topology/topology.h"
#include "kernels/base/status.h"

namespace kiln::serve {

class Rank0Run {
 public:
  // Everything passed must outlive this object; `gw` is the gateway rank 0 started (may be null).
  Rank0Run(const Topology& t, const Launcher& launcher, const World& w, ServerState& state,
           Engine& engine, gateway::Gateway* gw);
  Rank0Run(const Rank0Run&) = delete;
  Rank0Run& operator=(const Rank0Run&) = delete;

  // Engine::Options::on_rank_signals: other ranks got SIGTERM or SIGINT (counts so far).
  // Called on the engine thread, only while run() runs.
  void on_rank_signals(int drain_requests, int launcher_terms);

  // Takes the shutdown signals, runs the engine until it has drained and closes the gateway.
  // Returns the engine's status. A rank that stops responding, or a drain that outlasts
  // mpirun's SIGKILL, ends this process with exit status 1 instead (fail_job).
  Status run();

 private:
  using Clock = std::chrono::steady_clock;
  // Ends every open request with `client_message`, stops accepting and exits 1, so mpirun ends
  // the job: a rank that died or hung leaves this rank's step waiting in a collective forever.
  void fail_job(const std::string& why, const std::string& client_message =
                                            "the server failed: a rank stopped "
                                            "responding");
  // A drain, bounded by mpirun's SIGKILL when the signal came from it (decide_drain).
  void begin_shutdown(const ShutdownSignal& sig, const std::string& what);
  // The watchdog thread until run()'s engine returns: fails the job when a step has waited
  // longer than scheduler.step_timeout_s, or when the drain's cut-off time has come.
  void watch();
  // Lets the sessions write what the engine produced last (up to 2 s, never past the cut-off).
  void wait_for_connections();

  const Topology& t_;
  const Launcher& launcher_;
  const World& w_;
  ServerState& state_;
  Engine& engine_;
  gateway::Gateway* gw_;
  int reported_signals_ = 0;  // engine thread
  std::atomic<bool> failing_{false};
  std::atomic<bool> done_{false};
  std::mutex cut_mu_;
  Clock::time_point cut_at_ = Clock::time_point::max();  // streams still open then are ended
  bool cut_done_ = false;                                // guarded by cut_mu_
};

}  // namespace kiln::serve
