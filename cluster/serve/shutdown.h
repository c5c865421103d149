// Shutdown signals of a serving rank: which ones are taken, who sent them, and how rank 0 answers.
//
// SIGTERM and SIGINT (to the serving process) and SIGUSR1 (what mpirun forwards to every rank, and
// what `kiln launch` turns its first SIGTERM into) ask for a drain. They are blocked in every
// thread and taken by a SignalWatcher thread with sigwaitinfo, so no work runs in a signal
// handler. A SIGTERM sent by the Open MPI daemon that started this rank is different: mpirun
// sends it when it is ending the job (it was sent SIGTERM or SIGINT itself, or a rank died), as
// SIGCONT, then SIGTERM after odls_base_sigkill_timeout seconds, then SIGKILL after as many again.
// Such a SIGTERM leaves this rank kill_grace_s to live, and the drain must fit in it.
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <string>
#include <thread>

namespace kiln::serve {

sigset_t shutdown_signals();  // SIGTERM, SIGINT, SIGUSR1

// How this process was started. Read it before MPI is initialised (a singleton MPI_Init may add
// variables to the environment).
struct Launcher {
  bool open_mpi = false;     // started by Open MPI's mpirun (OMPI_COMM_WORLD_SIZE is set)
  double kill_grace_s = 1;   // odls_base_sigkill_timeout: SIGTERM to SIGKILL, seconds
};
Launcher detect_launcher();
// The value of OMPI_MCA_odls_base_sigkill_timeout (null: unset); Open MPI's default 1 s when
// unset or not a whole number of seconds >= 0.
double parse_kill_grace(const char* value);

struct ShutdownSignal {
  int sig = 0;
  // SIGTERM from the launcher's daemon (this rank's parent under Open MPI): SIGKILL follows
  // after kill_grace_s.
  bool from_launcher = false;
};

// What rank 0 does about a shutdown signal. Times are seconds after the signal.
struct DrainDecision {
  bool rank_failed = false;  // a rank died and mpirun is ending the job: fail every request now
  double drain_s = 0;        // running requests may finish until then; the rest get an error event
  // If the engine is still running then (a step outlasts drain_s, or waits on a rank that is
  // gone), every stream still open gets its error event from outside the engine thread and the
  // rank exits 1: before the launcher's SIGKILL. Infinity: no such limit.
  double cut_s = std::numeric_limits<double>::infinity();
};

// The rule (README "Serving", architecture.md "Shutdown"):
// * a drain request (SIGTERM or SIGINT from anyone but the launcher, SIGUSR1): drain for
//   drain_timeout_s;
// * the launcher's SIGTERM: if a step of a job of several ranks has already waited more than
//   0.25 s, a rank has died (that is when mpirun signals the survivors) and the job fails;
//   otherwise drain for min(drain_timeout_s, kill_grace_s / 2) and cut what is left at
//   kill_grace_s * 3/4, so every stream ends with an error event and [DONE] before SIGKILL.
DrainDecision decide_drain(const ShutdownSignal& signal, double drain_timeout_s,
                           double kill_grace_s, double seconds_in_step, bool several_ranks);

// Takes shutdown_signals() with sigwaitinfo on its own thread and calls `on_signal` there. The
// signals must already be blocked in every thread (block them before starting any thread).
class SignalWatcher {
 public:
  SignalWatcher(const Launcher& launcher, std::function<void(const ShutdownSignal&)> on_signal);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

std::string describe(const ShutdownSignal& signal);  // "signal 15 (SIGTERM from mpirun)"

}  // namespace kiln::serve
