// The control plane between rank 0 and the other ranks, on threads (LocalCommunicator): a worker
// that hears nothing from rank 0 gives up, heartbeats keep it alive and carry its shutdown
// signals to rank 0, an idle Engine sends them; and rank 0's answer to a shutdown signal.
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/engine/generation.h"
#include "cluster/comm/local_communicator.h"
#include "tools/make_model/make_model.h"
#include "tests/common/micro_model.h"
#include "cluster/serve/shutdown.h"
#include "cluster/engine/worker.h"

namespace kiln::serve {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(ShutdownRuleTest, DrainRequestsUseTheDrainTimeout) {
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) {
    // A long step is not a failure sign when the signal is not mpirun's.
    const DrainDecision d = decide_drain({sig, false}, 30, 1, /*seconds_in_step=*/5, true);
    EXPECT_FALSE(d.rank_failed) << sig;
    EXPECT_EQ(d.drain_s, 30) << sig;
    EXPECT_TRUE(std::isinf(d.cut_s)) << sig;
  }
}

TEST(ShutdownRuleTest, MpirunSigtermFitsTheKillGrace) {
  const DrainDecision d = decide_drain({SIGTERM, true}, 30, 1, 0.01, true);
  EXPECT_FALSE(d.rank_failed);
  EXPECT_DOUBLE_EQ(d.drain_s, 0.5);
  EXPECT_DOUBLE_EQ(d.cut_s, 0.75);
  const DrainDecision shorter = decide_drain({SIGTERM, true}, 2, 10, 0, true);
  EXPECT_DOUBLE_EQ(shorter.drain_s, 2);  // drain_timeout_s still bounds it
  EXPECT_DOUBLE_EQ(shorter.cut_s, 7.5);
}

TEST(ShutdownRuleTest, MpirunSigtermDuringAStuckStepIsARankFailure) {
  EXPECT_TRUE(decide_drain({SIGTERM, true}, 30, 1, 0.3, true).rank_failed);
  // One rank has nobody to wait on.
  EXPECT_FALSE(decide_drain({SIGTERM, true}, 30, 1, 0.3, false).rank_failed);
}

TEST(ShutdownRuleTest, KillGraceFromTheEnvironment) {
  EXPECT_EQ(parse_kill_grace(nullptr), 1);
  EXPECT_EQ(parse_kill_grace("5"), 5);
  EXPECT_EQ(parse_kill_grace("0"), 0);
  for (const char* bad : {"", "-1", "2.5", "x", "3s"}) EXPECT_EQ(parse_kill_grace(bad), 1) << bad;
}

TEST(HeartbeatRuleTest, IntervalAndSilenceLimit) {
  EXPECT_DOUBLE_EQ(heartbeat_interval_s(30), 1);
  EXPECT_DOUBLE_EQ(heartbeat_interval_s(0.2), 0.05);
  EXPECT_DOUBLE_EQ(rank0_silence_limit_s(5), 6);
}

TEST(HeartbeatAckTest, SumsEveryRanksReport) {
  auto group = make_local_group(3);
  SignalReport got[3];
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      got[r] = heartbeat_ack(*group[static_cast<size_t>(r)], SignalReport{r, r == 2 ? 1 : 0});
    });
  }
  for (auto& t : ranks) t.join();
  for (const SignalReport& s : got) {
    EXPECT_EQ(s.drain_requests, 3);
    EXPECT_EQ(s.launcher_terms, 1);
  }
}

class WorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln_worker_test_" + std::to_string(getpid()));
    ASSERT_TRUE(kiln::test_util::write_micro_model(dir_, /*write_hf=*/false).ok());
    auto model = KimiLinearModel::load((dir_ / "model.gguf").string());
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    model_ = std::move(model).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    std::filesystem::remove_all(dir_);
  }

  // Runs run_worker as rank 1 of `group` on its own thread.
  struct Worker {
    std::unique_ptr<StateCache> state = model_->new_paged_state(2, 16, 4).value();
    cpu::ThreadPool pool{1};
    std::atomic<int> silences{0};
    std::string message;
    WorkerOptions options;
    std::thread thread;
    void start(Communicator& control) {
      options.on_silence = [this](const std::string& m) {
        message = m;
        silences.fetch_add(1);
      };
      thread = std::thread([this, &control] {
        EXPECT_TRUE(run_worker(*model_, pool, *state, control, options).ok());
      });
    }
  };

  static void shutdown(Communicator& rank0) { send_plan(rank0, {StepPlan::Kind::kShutdown, {}}); }

  static inline std::filesystem::path dir_;
  static inline KimiLinearModel* model_ = nullptr;
};

TEST_F(WorkerTest, ASilentRankZeroIsNoticed) {
  auto group = make_local_group(2);
  Worker w;
  w.options.silence_timeout_s = 0.2;
  w.options.first_message_timeout_s = 3;
  w.start(*group[1]);
  send_plan(*group[0], {StepPlan::Kind::kHeartbeat, {}});
  heartbeat_ack(*group[0], {});
  const auto t0 = Clock::now();
  while (w.silences.load() == 0 && Clock::now() - t0 < 10s) std::this_thread::sleep_for(5ms);
  const double after = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(w.silences.load(), 1);
  EXPECT_GE(after, 0.15);  // the limit after the first message, not the first-message one
  EXPECT_LT(after, 2.0);
  EXPECT_NE(w.message.find("rank 0 is silent"), std::string::npos) << w.message;
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(w.silences.load(), 1);  // once
  shutdown(*group[0]);
  w.thread.join();
}

TEST_F(WorkerTest, BeforeTheFirstMessageTheLongerLimitHolds) {
  auto group = make_local_group(2);
  Worker w;
  w.options.silence_timeout_s = 0.1;
  w.options.first_message_timeout_s = 0.6;
  w.start(*group[1]);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(w.silences.load(), 0);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(w.silences.load(), 1);
  EXPECT_NE(w.message.find("before its first message"), std::string::npos) << w.message;
  shutdown(*group[0]);
  w.thread.join();
}

TEST_F(WorkerTest, AnIdleEngineSendsHeartbeatsThatCarryTheWorkersSignals) {
  auto group = make_local_group(2);
  Worker w;
  w.options.silence_timeout_s = 0.3;
  w.options.first_message_timeout_s = 0.3;
  std::atomic<int> reported{0};
  w.options.report = [&] { return SignalReport{1, 0}; };
  w.start(*group[1]);

  auto tokenizer = load_tokenizer(model_->checkpoint());
  ASSERT_TRUE(tokenizer.ok());
  Engine::Options o;
  o.scheduler.max_batch_tokens = 16;
  o.scheduler.prefill_chunk = 8;
  o.scheduler.max_sequences = 2;
  o.scheduler.max_queue = 4;
  o.scheduler.page_tokens = 4;
  o.scheduler.max_context = 32;
  o.scheduler.n_pages = 16;
  o.heartbeat_s = 0.05;
  o.on_rank_signals = [&](int drain_requests, int launcher_terms) {
    EXPECT_EQ(drain_requests, 1);
    EXPECT_EQ(launcher_terms, 0);
    reported.fetch_add(1);
  };
  cpu::ThreadPool pool(1);
  auto state = model_->new_paged_state(2, 16, 4).value();
  Engine engine(*model_, pool, *state, group[0].get(), *tokenizer, o, nullptr);
  std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });
  std::this_thread::sleep_for(1s);  // idle: over 3 silence limits
  engine.drain(Clock::now());
  loop.join();  // the shutdown plan ends the worker too
  w.thread.join();
  EXPECT_EQ(w.silences.load(), 0) << w.message;
  EXPECT_GE(reported.load(), 5);  // one per heartbeat: about 20 in the second
}

}  // namespace
}  // namespace kiln::serve
