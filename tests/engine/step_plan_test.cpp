#include "cluster/engine/step_plan.h"

#include <gtest/gtest.h>

namespace kiln::serve {
namespace {

TEST(StepPlanTest, RoundTrips) {
  StepPlan plan;
  plan.batch.add(3, std::vector<int32_t>{1, 2, 3, 4}, false, true, std::vector<int32_t>{7, 8, 9});
  plan.batch.add(0, std::vector<int32_t>{42}, true);
  auto back = decode_plan(encode_plan(plan));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(*back, plan);
  EXPECT_EQ(plan.batch.n_tokens(), 5);
  // The words are the layout step_plan.h gives (the fuzz corpus holds such words).
  EXPECT_EQ(encode_plan(plan), (std::vector<int32_t>{1, 2, 3, 1, 3, 4, 7, 8, 9, 1, 2, 3, 4,  //
                                                     0, 2, 0, 1, 42}));
  StepPlan shutdown{StepPlan::Kind::kShutdown, {}};
  EXPECT_EQ(*decode_plan(encode_plan(shutdown)), shutdown);
  StepPlan heartbeat{StepPlan::Kind::kHeartbeat, {}};
  EXPECT_EQ(*decode_plan(encode_plan(heartbeat)), heartbeat);
}

TEST(StepPlanTest, RejectsMalformedEncodings) {
  StepPlan plan;
  plan.batch.add(1, std::vector<int32_t>{1, 2}, false, true, std::vector<int32_t>{5});
  const std::vector<int32_t> good = encode_plan(plan);
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<int32_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_FALSE(decode_plan(cut).ok()) << "prefix of " << n << " words";
  }
  std::vector<int32_t> extra = good;
  extra.push_back(0);
  EXPECT_FALSE(decode_plan(extra).ok());
  std::vector<int32_t> kind = good;
  kind[0] = 9;
  EXPECT_FALSE(decode_plan(kind).ok());
  for (int32_t k : {0, 4, -1}) {
    kind[0] = k;
    EXPECT_FALSE(decode_plan(kind).ok()) << "kind " << k;
  }
  // Only a run plan carries sequences.
  for (StepPlan::Kind k : {StepPlan::Kind::kShutdown, StepPlan::Kind::kHeartbeat}) {
    std::vector<int32_t> with_seqs = good;
    with_seqs[0] = static_cast<int32_t>(k);
    EXPECT_FALSE(decode_plan(with_seqs).ok()) << "kind " << static_cast<int>(k);
  }
  std::vector<int32_t> neg = good;
  neg[1] = -1;
  EXPECT_FALSE(decode_plan(neg).ok());
  std::vector<int32_t> flags = good;
  flags[3] = 8;
  EXPECT_FALSE(decode_plan(flags).ok());
  std::vector<int32_t> no_tokens = good;
  no_tokens[5] = 0;
  EXPECT_FALSE(decode_plan(no_tokens).ok());
}

}  // namespace
}  // namespace kiln::serve
