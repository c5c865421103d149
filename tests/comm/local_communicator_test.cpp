// LocalCommunicator: every collective with 1-4 threads as ranks, compared with what it must
// produce (all_reduce_sum bit-identical to the rank-order sum on every rank), long loops without
// deadlock, several groups at once, and the in-process tensor × pipeline world.
#include "cluster/comm/local_communicator.h"

#include <atomic>
#include <cstring>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kiln {
namespace {

// Runs body(comm) on one thread per rank and joins them.
void run_ranks(std::vector<std::unique_ptr<Communicator>>& comms,
               const std::function<void(Communicator&)>& body) {
  std::vector<std::thread> threads;
  for (auto& comm : comms) threads.emplace_back([&body, &comm] { body(*comm); });
  for (auto& t : threads) t.join();
}

// Values whose sum depends on the order of addition, so a wrong order shows up as a bit change.
float value(int rank, int64_t i, int round = 0) {
  const float scale = (rank % 2 == 0) ? 1e7f : 1e-3f;
  return scale * static_cast<float>(((i * 7919 + rank * 104729 + round * 31) % 1000) - 500) / 3.0f;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

class LocalCommunicatorTest : public ::testing::TestWithParam<int> {};

TEST_P(LocalCommunicatorTest, AllReduceIsTheRankOrderSumOnEveryRank) {
  const int n_ranks = GetParam();
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{1000}, int64_t{4099}}) {
    auto comms = make_local_group(n_ranks);
    std::vector<std::vector<float>> out(n_ranks);
    run_ranks(comms, [&](Communicator& c) {
      std::vector<float> data(n);
      for (int64_t i = 0; i < n; ++i) data[i] = value(c.rank(), i);
      c.all_reduce_sum(data.data(), n);
      out[c.rank()] = data;
    });
    for (int64_t i = 0; i < n; ++i) {
      float expected = value(0, i);
      for (int r = 1; r < n_ranks; ++r) expected += value(r, i);
      for (int r = 0; r < n_ranks; ++r) {
        ASSERT_EQ(bits(out[r][i]), bits(expected)) << "n=" << n << " rank " << r << " i=" << i;
      }
    }
  }
}

TEST_P(LocalCommunicatorTest, AllGatherAndAllGatherV) {
  const int n_ranks = GetParam();
  auto comms = make_local_group(n_ranks);
  std::vector<int64_t> counts(n_ranks);
  for (int r = 0; r < n_ranks; ++r) counts[r] = r + 1;  // 1, 2, 3, ...
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  run_ranks(comms, [&](Communicator& c) {
    const int r = c.rank();
    std::vector<float> send = {static_cast<float>(r), static_cast<float>(10 * r)};
    std::vector<float> recv(2 * n_ranks, -1.0f);
    c.all_gather(send.data(), 2, recv.data());
    for (int p = 0; p < n_ranks; ++p) {
      EXPECT_EQ(recv[2 * p], p);
      EXPECT_EQ(recv[2 * p + 1], 10 * p);
    }
    std::vector<float> mine(counts[r], static_cast<float>(100 + r));
    std::vector<float> all(total, -1.0f);
    c.all_gather_v(mine.data(), counts[r], all.data(), counts);
    int64_t at = 0;
    for (int p = 0; p < n_ranks; ++p) {
      for (int64_t k = 0; k < counts[p]; ++k) EXPECT_EQ(all[at++], 100 + p) << "from rank " << p;
    }
  });
}

TEST_P(LocalCommunicatorTest, BroadcastFromEveryRoot) {
  const int n_ranks = GetParam();
  auto comms = make_local_group(n_ranks);
  run_ranks(comms, [&](Communicator& c) {
    for (int root = 0; root < n_ranks; ++root) {
      std::vector<int32_t> data(37, c.rank() == root ? 1000 + root : -1);
      c.broadcast(data.data(), static_cast<int64_t>(data.size() * sizeof(int32_t)), root);
      for (int32_t v : data) EXPECT_EQ(v, 1000 + root);
    }
  });
}

// Point-to-point needs a peer, so this one runs from two ranks up (no np1 case to skip).
class LocalRingTest : public ::testing::TestWithParam<int> {};

TEST_P(LocalRingTest, SendRecvRingKeepsOrder) {
  const int n_ranks = GetParam();
  auto comms = make_local_group(n_ranks);
  run_ranks(comms, [&](Communicator& c) {
    const int next = (c.rank() + 1) % n_ranks;
    const int prev = (c.rank() + n_ranks - 1) % n_ranks;
    for (int m = 0; m < 20; ++m) {  // sends are buffered, so all ranks may send first
      std::vector<int32_t> out = {c.rank(), m};
      c.send(out.data(), sizeof(int32_t) * 2, next);
    }
    for (int m = 0; m < 20; ++m) {
      std::vector<int32_t> in(2, -1);
      c.recv(in.data(), sizeof(int32_t) * 2, prev);
      EXPECT_EQ(in[0], prev);
      EXPECT_EQ(in[1], m);
    }
  });
}

TEST_P(LocalCommunicatorTest, ThousandMixedRoundsWithoutDeadlock) {
  const int n_ranks = GetParam();
  auto comms = make_local_group(n_ranks);
  run_ranks(comms, [&](Communicator& c) {
    std::vector<float> data(16);
    std::vector<float> gathered(16 * n_ranks);
    for (int round = 0; round < 1000; ++round) {
      for (int64_t i = 0; i < 16; ++i) data[i] = value(c.rank(), i, round);
      c.all_reduce_sum(data.data(), 16);
      float expected = value(0, 5, round);
      for (int r = 1; r < n_ranks; ++r) expected += value(r, 5, round);
      ASSERT_EQ(bits(data[5]), bits(expected)) << "round " << round;
      c.all_gather(data.data(), 16, gathered.data());
      int32_t token = c.rank() == round % n_ranks ? round : -1;
      c.broadcast(&token, sizeof(token), round % n_ranks);
      ASSERT_EQ(token, round);
      if (round % 100 == 0) c.barrier();
    }
    EXPECT_GT(c.busy_seconds(), 0.0);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalCommunicatorTest, ::testing::Values(1, 2, 3, 4),
                         [](const auto& p) { return "np" + std::to_string(p.param); });
INSTANTIATE_TEST_SUITE_P(Ranks, LocalRingTest, ::testing::Values(2, 3, 4),
                         [](const auto& p) { return "np" + std::to_string(p.param); });

TEST(LocalCommunicator, BarrierHoldsEveryRankUntilAllArrive) {
  auto comms = make_local_group(3);
  std::atomic<int> arrived{0};
  run_ranks(comms, [&](Communicator& c) {
    for (int round = 1; round <= 50; ++round) {
      arrived.fetch_add(1);
      c.barrier();
      EXPECT_GE(arrived.load(), 3 * round);
      c.barrier();  // nobody starts the next round before everyone checked this one
    }
  });
}

TEST(LocalCommunicator, IndependentGroupsRunConcurrently) {
  // Two TP-like groups of 2 plus a third group of 3, all driven at the same time.
  auto a = make_local_group(2);
  auto b = make_local_group(2);
  auto d = make_local_group(3);
  auto work = [](float base) {
    return [base](Communicator& c) {
      for (int round = 0; round < 300; ++round) {
        float x = base + static_cast<float>(c.rank());
        c.all_reduce_sum(&x, 1);
        float expected = 0.0f;
        for (int r = 0; r < c.size(); ++r) expected += base + static_cast<float>(r);
        ASSERT_EQ(x, expected);
      }
    };
  };
  std::thread ta([&] { run_ranks(a, work(1.0f)); });
  std::thread tb([&] { run_ranks(b, work(100.0f)); });
  std::thread td([&] { run_ranks(d, work(-7.0f)); });
  ta.join();
  tb.join();
  td.join();
}

TEST(LocalCommunicator, WorldOfTensorTimesPipeline) {
  auto ranks = make_local_world(/*tensor=*/2, /*pipeline=*/3);
  ASSERT_EQ(ranks.size(), 6u);
  std::vector<std::thread> threads;
  for (auto& rank : ranks) {
    threads.emplace_back([&rank] {
      const World& w = rank.world;
      EXPECT_EQ(w.rank, w.pp_stage * w.tp_size + w.tp_rank);
      EXPECT_EQ(rank.tp->rank(), w.tp_rank);
      EXPECT_EQ(rank.tp->size(), 2);
      EXPECT_EQ(rank.pp->rank(), w.pp_stage);
      EXPECT_EQ(rank.pp->size(), 3);
      // TP all-reduce stays inside the stage: sum of world ranks of this stage.
      float x = static_cast<float>(w.rank);
      rank.tp->all_reduce_sum(&x, 1);
      EXPECT_EQ(x, static_cast<float>(4 * w.pp_stage + 1));
      // PP: a token travels stage 0 → 1 → 2, each stage adding its number.
      int32_t token = 0;
      if (w.pp_stage > 0) rank.pp->recv(&token, sizeof(token), w.pp_stage - 1);
      token += 10 * (w.pp_stage + 1) + w.tp_rank;
      if (w.pp_stage + 1 < w.pp_size) rank.pp->send(&token, sizeof(token), w.pp_stage + 1);
      if (w.pp_stage + 1 == w.pp_size) {
        EXPECT_EQ(token, 60 + 3 * w.tp_rank);
      }
    });
  }
  for (auto& t : threads) t.join();
}

#ifndef KILN_HAVE_MPI
// Built without MPI, the world is one rank backed by LocalCommunicators.
TEST(WorldWithoutMpi, OneRankOnly) {
  auto one = init_world(nullptr, nullptr, 1, 1);
  ASSERT_TRUE(one.ok()) << one.status().to_string();
  EXPECT_EQ((*one)->world().size, 1);
  EXPECT_EQ((*one)->tp().size(), 1);
  agree_or_abort(**one, Status());
  auto two = init_world(nullptr, nullptr, 2, 1);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(two.status().message().find("tensor=2"), std::string::npos);
}

TEST(WorldWithoutMpi, AgreeOrAbortExitsNamingTheRank) {
  auto one = init_world(nullptr, nullptr, 1, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EXIT(agree_or_abort(**one, not_found("shard missing")), ::testing::ExitedWithCode(1),
              "rank 0 \\(host .*\\): NOT_FOUND: shard missing");
}
#endif

}  // namespace
}  // namespace kiln
