#include "cluster/serve/rank0_run.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <spdlog/spdlog.h>

namespace kiln::serve {

Rank0Run::Rank0Run(const Topology& t, const Launcher& launcher, const World& w, ServerState& state,
                   Engine& engine, gateway::Gateway* gw)
    : t_(t), launcher_(launcher), w_(w), state_(state), engine_(engine), gw_(gw) {}

void Rank0Run::on_rank_signals(int drain_requests, int launcher_terms) {
  if (drain_requests + launcher_terms <= reported_signals_) return;
  reported_signals_ = drain_requests + launcher_terms;
  ShutdownSignal s{SIGTERM, /*from_launcher=*/launcher_terms > 0};
  begin_shutdown(s, fmt::format("another rank got SIGTERM or SIGINT ({} from mpirun, {} from "
                                "elsewhere; told in a heartbeat answer)",
                                launcher_terms, drain_requests));
}

void Rank0Run::fail_job(const std::string& why, const std::string& client_message) {
  if (failing_.exchange(true)) return;
  spdlog::error("{}: ending every request and the job", why);
  state_.failed.store(true);
  {
    std::lock_guard lock(state_.load_mu);
    state_.failure = why;
  }
  engine_.fail(client_message);
  if (gw_) gw_->stop_accepting();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // sessions write the errors
  std::fflush(nullptr);
  std::_Exit(1);
}

void Rank0Run::begin_shutdown(const ShutdownSignal& sig, const std::string& what) {
  const DrainDecision d = decide_drain(sig, t_.scheduler.drain_timeout_s, launcher_.kill_grace_s,
                                       engine_.seconds_in_step(), w_.size > 1);
  if (d.rank_failed) {
    fail_job(fmt::format("{} while a step has waited {:.1f} s on the other ranks", what,
                         engine_.seconds_in_step()));
    return;
  }
  const auto now = Clock::now();
  if (std::isfinite(d.cut_s)) {
    spdlog::info(
        "{}: draining for up to {:.2f} s (mpirun sends SIGKILL {:g} s after its "
        "SIGTERM; open requests end by {:.2f} s)",
        what, d.drain_s, launcher_.kill_grace_s, d.cut_s);
    std::lock_guard lock(cut_mu_);
    cut_at_ = std::min(cut_at_, now + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(d.cut_s)));
  } else {
    spdlog::info("{}: draining for up to {:g} s", what, d.drain_s);
  }
  if (gw_) gw_->stop_accepting();
  engine_.drain(
      now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(d.drain_s)));
}

void Rank0Run::watch() {
  while (!done_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const double in_step = engine_.seconds_in_step();
    if (in_step > t_.scheduler.step_timeout_s) {
      fail_job(
          fmt::format("a step or heartbeat has waited {:.1f} s on the other ranks "
                      "(scheduler.step_timeout_s = {})",
                      in_step, t_.scheduler.step_timeout_s));
    }
    bool cut = false;
    {
      std::lock_guard lock(cut_mu_);
      if (Clock::now() >= cut_at_ && !cut_done_) cut = cut_done_ = true;
    }
    // The engine has not finished draining (a step outlasts the drain, or waits on a rank
    // that is gone): end the requests and this rank before mpirun's SIGKILL does.
    if (cut) fail_job("mpirun's SIGKILL is near", "the server is shutting down");
  }
}

void Rank0Run::wait_for_connections() {
  Clock::time_point until = Clock::now() + std::chrono::seconds(2);
  {
    std::lock_guard lock(cut_mu_);
    until = std::min(until, cut_at_);  // before mpirun's SIGKILL
  }
  while (gw_ && gw_->open_connections() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status Rank0Run::run() {
  SignalWatcher watcher(launcher_,
                        [&](const ShutdownSignal& sig) { begin_shutdown(sig, describe(sig)); });
  std::thread watchdog([&] { watch(); });
  spdlog::info("ready: model {} ({} rank(s), tensor {} x pipeline {})", state_.model_id, w_.size,
               w_.tp_size, w_.pp_size);
  Status s = engine_.run();
  done_.store(true);
  watchdog.join();
  wait_for_connections();
  if (gw_) gw_->stop();
  state_.engine.store(nullptr);
  spdlog::info("stopped");
  return s;
}

}  // namespace kiln::serve
