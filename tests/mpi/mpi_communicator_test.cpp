// MpiCommunicator and the world bootstrap under mpirun: every collective against its expected
// result (all_reduce_sum bit-identical to the rank-order sum), the CPU a rank spends waiting in
// broadcast_idle, TP/PP groups for tensor=2 × pipeline=2, shape errors, and agree_or_abort. With
// --kiln-fail-rank=R (--kiln-check-rank=R) the program instead makes rank R report a load failure
// (fail a KILN_CHECK while the others wait in a barrier), for the tests that check the job ends
// non-zero and names rank R.
#include "cluster/comm/mpi_communicator.h"

#include <mpi.h>
#include <sys/resource.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/common/rank_failure_printer.h"
#include "tests/common/skip_exit.h"

#include "cluster/comm/world.h"
#include "kernels/base/check.h"

namespace kiln {
namespace {

// Same generator as the LocalCommunicator test: sums that depend on the order of addition.
float value(int rank, int64_t i, int round = 0) {
  const float scale = (rank % 2 == 0) ? 1e7f : 1e-3f;
  return scale * static_cast<float>(((i * 7919 + rank * 104729 + round * 31) % 1000) - 500) / 3.0f;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

int mpi_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::unique_ptr<WorldContext> flat_world() {
  auto context = init_world(nullptr, nullptr, mpi_size(), 1);
  EXPECT_TRUE(context.ok()) << context.status().to_string();
  return std::move(context).value();
}

TEST(MpiWorld, FlatWorldMatchesMpi) {
  auto context = flat_world();
  const World& w = context->world();
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  EXPECT_EQ(w.rank, rank);
  EXPECT_EQ(w.size, mpi_size());
  EXPECT_EQ(w.tp_rank, rank);
  EXPECT_EQ(w.pp_stage, 0);
  EXPECT_EQ(w.local_rank, rank);  // one host
  EXPECT_EQ(w.local_size, mpi_size());
  EXPECT_FALSE(w.host.empty());
  EXPECT_EQ(context->world_comm().rank(), rank);
  EXPECT_EQ(context->pp().size(), 1);
}

TEST(MpiWorld, ShapeThatDoesNotMatchTheJobIsInvalidArgument) {
  const int size = mpi_size();
  auto context = init_world(nullptr, nullptr, size + 1, 1);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), StatusCode::kInvalidArgument);
  const std::string message = context.status().message();
  EXPECT_NE(message.find("tensor=" + std::to_string(size + 1)), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(size) + " rank"), std::string::npos) << message;
}

TEST(MpiCommunicator, AllReduceIsTheRankOrderSumOnEveryRank) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{1000}, int64_t{4099}, int64_t{100003}}) {
    std::vector<float> data(n);
    for (int64_t i = 0; i < n; ++i) data[i] = value(c.rank(), i);
    c.all_reduce_sum(data.data(), n);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      float expected = value(0, i);
      for (int r = 1; r < c.size(); ++r) expected += value(r, i);
      if (bits(data[i]) != bits(expected) && mismatches++ == 0) {
        ADD_FAILURE() << "n=" << n << " first mismatch at " << i << ": " << data[i] << " vs "
                      << expected;
      }
    }
    EXPECT_EQ(mismatches, 0) << "n=" << n;
  }
}

TEST(MpiCommunicator, AllGatherAndAllGatherV) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  const int size = c.size();
  const int r = c.rank();
  std::vector<float> send = {static_cast<float>(r), static_cast<float>(10 * r)};
  std::vector<float> recv(2 * size, -1.0f);
  c.all_gather(send.data(), 2, recv.data());
  for (int p = 0; p < size; ++p) {
    EXPECT_EQ(recv[2 * p], p);
    EXPECT_EQ(recv[2 * p + 1], 10 * p);
  }
  std::vector<int64_t> counts(size);
  for (int p = 0; p < size; ++p) counts[p] = (p == 1) ? 0 : p + 1;  // one rank sends nothing
  std::vector<float> mine(counts[r], static_cast<float>(100 + r));
  std::vector<float> all(std::accumulate(counts.begin(), counts.end(), int64_t{0}), -1.0f);
  c.all_gather_v(mine.data(), counts[r], all.data(), counts);
  int64_t at = 0;
  for (int p = 0; p < size; ++p) {
    for (int64_t k = 0; k < counts[p]; ++k) EXPECT_EQ(all[at++], 100 + p) << "from rank " << p;
  }
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  for (int root = 0; root < c.size(); ++root) {
    std::vector<int32_t> data(5000, c.rank() == root ? 1000 + root : -1);
    c.broadcast(data.data(), static_cast<int64_t>(data.size() * sizeof(int32_t)), root);
    for (int32_t v : data) ASSERT_EQ(v, 1000 + root);
  }
}

TEST(MpiCommunicator, BroadcastIdleFromEveryRoot) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  for (int root = 0; root < c.size(); ++root) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{5000}, size_t{300000}}) {  // eager and not
      std::vector<int32_t> data(n, c.rank() == root ? 2000 + root : -1);
      c.broadcast_idle(data.data(), static_cast<int64_t>(n * sizeof(int32_t)), root);
      for (int32_t v : data) ASSERT_EQ(v, 2000 + root) << n << " values from root " << root;
    }
  }
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// Ranks waiting ~300 ms for the root's message sleep through most of the wait.
TEST(MpiCommunicator, BroadcastIdleWaitsWithoutSpinning) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  c.barrier();
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = cpu_seconds();
  std::array<int64_t, 4> step{};
  if (c.rank() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    step = {1, 22, 333, 4444};
  }
  c.broadcast_idle(step.data(), sizeof(step), 0);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = cpu_seconds() - cpu_start;
  EXPECT_EQ(step, (std::array<int64_t, 4>{1, 22, 333, 4444}));
  if (c.rank() != 0) {
    // It really waited (rank 0 sleeps 300 ms after the barrier; a loaded machine may let this
    // rank leave the barrier up to 150 ms later), so the CPU share below measures a wait. A
    // spinning wait uses about a whole core: far over the bound.
    EXPECT_GE(wall, 0.15);
    EXPECT_LT(cpu, 0.3 * wall) << "rank " << c.rank() << " used " << cpu << " s of CPU in "
                               << wall << " s of waiting";
    std::printf("[mpi] rank %d waited %.3f s using %.1f%% of a core\n", c.rank(), wall,
                100.0 * cpu / wall);
  }
}

TEST(MpiCommunicator, SendRecvTokenRing) {
  auto context = flat_world();
  Communicator& c = context->world_comm();
  const int size = c.size();
  const int next = (c.rank() + 1) % size;
  const int prev = (c.rank() + size - 1) % size;
  for (int round = 0; round < 20; ++round) {
    std::vector<int32_t> token(3000, 0);  // above the eager limit
    if (c.rank() == 0) {
      token.assign(token.size(), round);
      c.send(token.data(), static_cast<int64_t>(token.size() * sizeof(int32_t)), next);
      c.recv(token.data(), static_cast<int64_t>(token.size() * sizeof(int32_t)), prev);
      EXPECT_EQ(token.front(), round + size - 1);
    } else {
      c.recv(token.data(), static_cast<int64_t>(token.size() * sizeof(int32_t)), prev);
      EXPECT_EQ(token.back(), round + c.rank() - 1);
      for (auto& t : token) ++t;
      c.send(token.data(), static_cast<int64_t>(token.size() * sizeof(int32_t)), next);
    }
  }
}

TEST(MpiCommunicator, ThousandMixedRoundsWithoutDeadlock) {
  auto context = flat_world();
  Communicator& c = context->tp();
  std::vector<float> data(16);
  std::vector<float> gathered(16 * c.size());
  for (int round = 0; round < 1000; ++round) {
    for (int64_t i = 0; i < 16; ++i) data[i] = value(c.rank(), i, round);
    c.all_reduce_sum(data.data(), 16);
    float expected = value(0, 5, round);
    for (int r = 1; r < c.size(); ++r) expected += value(r, 5, round);
    ASSERT_EQ(bits(data[5]), bits(expected)) << "round " << round;
    c.all_gather(data.data(), 16, gathered.data());
    int32_t token = c.rank() == round % c.size() ? round : -1;
    c.broadcast(&token, sizeof(token), round % c.size());
    ASSERT_EQ(token, round);
    if (round % 100 == 0) c.barrier();
  }
  EXPECT_GT(c.busy_seconds(), 0.0);
}

TEST(MpiWorld, TensorTwoPipelineTwo) {
  if (mpi_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  auto made = init_world(nullptr, nullptr, /*tensor=*/2, /*pipeline=*/2);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  const auto& context = *made;
  const World& w = context->world();
  EXPECT_EQ(w.tp_rank, w.rank % 2);
  EXPECT_EQ(w.pp_stage, w.rank / 2);
  EXPECT_EQ(context->tp().rank(), w.tp_rank);
  EXPECT_EQ(context->pp().rank(), w.pp_stage);
  // TP all-reduce stays inside the stage: ranks {0,1} → 1, ranks {2,3} → 5.
  float x = static_cast<float>(w.rank);
  context->tp().all_reduce_sum(&x, 1);
  EXPECT_EQ(x, w.pp_stage == 0 ? 1.0f : 5.0f);
  std::vector<float> stage_ranks(2);
  float me = static_cast<float>(w.rank);
  context->tp().all_gather(&me, 1, stage_ranks.data());
  EXPECT_EQ(stage_ranks[0], 2 * w.pp_stage);
  EXPECT_EQ(stage_ranks[1], 2 * w.pp_stage + 1);
  // PP: stage 0 sends its hidden state to stage 1 of the same tp_rank.
  std::vector<float> hidden(64, static_cast<float>(w.rank));
  if (w.pp_stage == 0) {
    context->pp().send(hidden.data(), 64 * sizeof(float), 1);
  } else {
    context->pp().recv(hidden.data(), 64 * sizeof(float), 0);
    EXPECT_EQ(hidden[63], static_cast<float>(w.tp_rank));  // from world rank tp_rank
  }
}

TEST(MpiWorld, AgreeOrAbortReturnsWhenEveryRankIsOk) {
  auto context = flat_world();
  agree_or_abort(*context, Status());
  context->world_comm().barrier();
}

using test::RankFailurePrinter;

// --kiln-fail-rank=R: rank R reports a load failure to agree_or_abort, which must end the job.
int run_failing_load(int fail_rank) {
  auto context = init_world(nullptr, nullptr, mpi_size(), 1);
  if (!context.ok()) return 2;
  const int rank = (*context)->world().rank;
  Status status;
  if (rank == fail_rank) {
    status = not_found("shard file model-0000{}.safetensors: no such file", rank);
  }
  agree_or_abort(**context, status);
  std::fprintf(stderr, "rank %d: agree_or_abort returned although rank %d failed\n", rank,
               fail_rank);
  return 0;  // exit code 0 makes the wrapper fail
}

// --kiln-check-rank=R: rank R fails a KILN_CHECK while the others wait in a barrier; the abort
// handler must end the whole job.
int run_failing_check(int fail_rank) {
  auto context = init_world(nullptr, nullptr, mpi_size(), 1);
  if (!context.ok()) return 2;
  const int rank = (*context)->world().rank;
  KILN_CHECK_MSG(rank != fail_rank, "deliberate failure");
  (*context)->world_comm().barrier();
  std::fprintf(stderr, "rank %d: barrier returned although rank %d failed\n", rank, fail_rank);
  return 0;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--kiln-fail-rank=")) {
      return kiln::run_failing_load(std::stoi(arg.substr(17)));
    }
    if (arg.starts_with("--kiln-check-rank=")) {
      return kiln::run_failing_check(std::stoi(arg.substr(18)));
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new kiln::RankFailurePrinter(rank));
  }
  const int result = kiln::test::skip_aware_exit_status(RUN_ALL_TESTS());
  MPI_Finalize();
  return result;
}
