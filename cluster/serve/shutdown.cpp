#include "cluster/serve/shutdown.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace kiln::serve {

sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  return set;
}

double parse_kill_grace(const char* value) {
  constexpr double kOpenMpiDefault = 1;
  if (value == nullptr) return kOpenMpiDefault;
  const char* end = value + std::strlen(value);
  int seconds = -1;
  const auto [at, error] = std::from_chars(value, end, seconds);
  if (error != std::errc() || at != end || seconds < 0) return kOpenMpiDefault;
  return seconds;
}

Launcher detect_launcher() {
  Launcher l;
  l.open_mpi = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  l.kill_grace_s = parse_kill_grace(std::getenv("OMPI_MCA_odls_base_sigkill_timeout"));
  return l;
}

DrainDecision decide_drain(const ShutdownSignal& signal, double drain_timeout_s,
                           double kill_grace_s, double seconds_in_step, bool several_ranks) {
  constexpr double kStuckStepS = 0.25;
  DrainDecision d;
  if (!signal.from_launcher) {
    d.drain_s = drain_timeout_s;
    return d;
  }
  if (several_ranks && seconds_in_step > kStuckStepS) {
    d.rank_failed = true;
    return d;
  }
  d.drain_s = std::min(drain_timeout_s, kill_grace_s / 2);
  d.cut_s = kill_grace_s * 3 / 4;
  return d;
}

SignalWatcher::SignalWatcher(const Launcher& launcher,
                             std::function<void(const ShutdownSignal&)> on_signal)
    : thread_([this, launcher, f = std::move(on_signal)] {
        const sigset_t set = shutdown_signals();
        for (;;) {
          siginfo_t info{};
          const int sig = sigwaitinfo(&set, &info);
          if (sig < 0) continue;  // EINTR
          if (stopping_.load()) return;
          ShutdownSignal s;
          s.sig = sig;
          // The daemon that started this rank is its parent; mpirun's SIGTERM comes from it.
          s.from_launcher = launcher.open_mpi && sig == SIGTERM && info.si_code == SI_USER &&
                            info.si_pid == getppid();
          f(s);
        }
      }) {}

SignalWatcher::~SignalWatcher() {
  stopping_.store(true);
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

std::string describe(const ShutdownSignal& signal) {
  const char* name = signal.sig == SIGTERM ? "SIGTERM"
                     : signal.sig == SIGINT ? "SIGINT"
                     : signal.sig == SIGUSR1 ? "SIGUSR1"
                                             : "signal";
  return fmt::format("signal {} ({}{})", signal.sig, name,
                     signal.from_launcher ? " from mpirun" : "");
}

}  // namespace kiln::serve
