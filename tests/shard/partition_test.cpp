// The partition plan: every tensor kind's TP range on the released 48B shape and on the micro
// shape, pipeline stages (explicit and byte-balanced), each error message, and the per-rank
// memory estimate against an independent count of sharded and replicated bytes.
#include "shard/partition.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <gtest/gtest.h>

#include "shard/state.h"

namespace kiln {
namespace {

ModelConfig with_layers(ModelConfig c, int64_t n, const std::vector<int64_t>& mla) {
  c.num_layers = n;
  c.layer_kinds.assign(static_cast<size_t>(n), LayerKind::kKda);
  for (int64_t l : mla) c.layer_kinds[static_cast<size_t>(l)] = LayerKind::kMla;
  return c;
}

// The released 48B-A3B shape (kimi-linear.md §1).
ModelConfig real_config() {
  ModelConfig c;
  c.name = "kimi-linear-48b";
  c.vocab_size = 163840, c.hidden_size = 2304;
  c.kda_num_heads = 32, c.kda_head_dim = 128, c.kda_conv_kernel = 4, c.kda_gate_rank = 128;
  c.mla_num_heads = 32, c.kv_lora_rank = 512, c.qk_nope_head_dim = 128, c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.intermediate_size = 9216, c.first_k_dense_replace = 1;
  c.num_experts = 256, c.experts_per_token = 8, c.num_shared_experts = 1;
  c.moe_intermediate_size = 1024;
  return with_layers(c, 27, {3, 7, 11, 15, 19, 23, 26});
}

ModelConfig micro_config() {
  ModelConfig c;
  c.name = "micro";
  c.vocab_size = 640, c.hidden_size = 128;
  c.kda_num_heads = 4, c.kda_head_dim = 32, c.kda_conv_kernel = 4, c.kda_gate_rank = 32;
  c.mla_num_heads = 4, c.kv_lora_rank = 32, c.qk_nope_head_dim = 32, c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.intermediate_size = 256, c.first_k_dense_replace = 1;
  c.num_experts = 8, c.experts_per_token = 2, c.num_shared_experts = 1;
  c.moe_intermediate_size = 64;
  return with_layers(c, 8, {3, 7});
}

std::vector<RankPlan> plans_of(const ModelConfig& c, int tp, int pp, DType t = DType::kBF16,
                               std::vector<int64_t> split = {}) {
  auto plans = plan_all(c, ParallelSpec{tp, pp, std::move(split)}, t, {});
  EXPECT_TRUE(plans.ok()) << plans.status().message();
  return plans.ok() ? *plans : std::vector<RankPlan>{};
}

// The ranges, in order, cover [0, total) exactly once.
void expect_tiles(const std::vector<Range>& parts, int64_t total, const std::string& what) {
  int64_t at = 0;
  for (const Range& r : parts) {
    EXPECT_EQ(r.begin, at) << what;
    EXPECT_GE(r.size(), 0) << what;
    at = r.end;
  }
  EXPECT_EQ(at, total) << what;
}

// Every TP-split kind of one stage's group: even contiguous slices in tp-rank order.
void expect_tp_ranges(const ModelConfig& c, const std::vector<RankPlan>& group, int tp) {
  ASSERT_EQ(group.size(), static_cast<size_t>(tp));
  std::vector<Range> kda, mla, dense, expert, shared, vocab;
  for (int r = 0; r < tp; ++r) {
    const RankPlan& p = group[static_cast<size_t>(r)];
    EXPECT_EQ(p.tp_rank, r);
    EXPECT_EQ(p.tensor, tp);
    EXPECT_EQ(p.kda_heads, (Range{c.kda_num_heads / tp * r, c.kda_num_heads / tp * (r + 1)}));
    EXPECT_EQ(p.mla_heads, (Range{c.mla_num_heads / tp * r, c.mla_num_heads / tp * (r + 1)}));
    const int64_t f = c.intermediate_size / tp, e = c.moe_intermediate_size / tp;
    EXPECT_EQ(p.dense_ffn, (Range{f * r, f * (r + 1)}));
    EXPECT_EQ(p.expert_ffn, (Range{e * r, e * (r + 1)}));
    EXPECT_EQ(p.shared_ffn,
              (Range{e * c.num_shared_experts * r, e * c.num_shared_experts * (r + 1)}));
    kda.push_back(p.kda_heads), mla.push_back(p.mla_heads), dense.push_back(p.dense_ffn);
    expert.push_back(p.expert_ffn), shared.push_back(p.shared_ffn), vocab.push_back(p.vocab);
  }
  expect_tiles(kda, c.kda_num_heads, "KDA heads");
  expect_tiles(mla, c.mla_num_heads, "MLA heads");
  expect_tiles(dense, c.intermediate_size, "dense FFN");
  expect_tiles(expert, c.moe_intermediate_size, "expert FFN");
  expect_tiles(shared, c.moe_intermediate_size * c.num_shared_experts, "shared FFN");
  expect_tiles(vocab, c.vocab_size, "vocab");
}

TEST(PartitionTest, RealModelRangesForEveryTensorSize) {
  const ModelConfig c = real_config();
  for (int tp : {1, 2, 4, 8, 16, 32}) {
    SCOPED_TRACE(tp);
    auto plans = plans_of(c, tp, 1);
    expect_tp_ranges(c, plans, tp);
    for (const RankPlan& p : plans) {
      EXPECT_EQ(p.layers, (Range{0, 27}));
      EXPECT_EQ(p.vocab,
                (Range{int64_t{163840} / tp * p.tp_rank, int64_t{163840} / tp * (p.tp_rank + 1)}));
    }
  }
  // TP 8, rank 3: KDA channels [1536, 2048) = heads [12, 16); MLA q_proj rows [2304, 3072).
  const RankPlan p = plans_of(c, 8, 1)[3];
  EXPECT_EQ(p.kda_heads, (Range{12, 16}));
  EXPECT_EQ(p.kda_heads.begin * c.kda_head_dim, 1536);
  EXPECT_EQ(p.mla_heads.begin * c.mla_qk_head_dim(), 2304);
  EXPECT_EQ(p.expert_ffn, (Range{384, 512}));
  EXPECT_EQ(p.dense_ffn, (Range{3456, 4608}));
  EXPECT_EQ(p.vocab, (Range{61440, 81920}));
}

TEST(PartitionTest, MicroModelRangesForEveryTensorSize) {
  const ModelConfig c = micro_config();
  for (int tp : {1, 2, 4}) {
    SCOPED_TRACE(tp);
    expect_tp_ranges(c, plans_of(c, tp, 1, DType::kF32), tp);
  }
  auto eight = plan_all(c, ParallelSpec{8, 1, {}}, DType::kF32, {});
  ASSERT_FALSE(eight.ok());
  EXPECT_EQ(eight.status().message(), "tensor=8 does not divide 4 KDA heads");
}

TEST(PartitionTest, VocabSplitsUnevenlyIntoCeilSizedRanges) {
  ModelConfig c = micro_config();
  c.vocab_size = 10;
  std::vector<Range> vocab;
  for (const RankPlan& p : plans_of(c, 4, 1, DType::kF32)) vocab.push_back(p.vocab);
  EXPECT_EQ(vocab, (std::vector<Range>{{0, 3}, {3, 6}, {6, 9}, {9, 10}}));
  c.vocab_size = 2;
  vocab.clear();
  for (const RankPlan& p : plans_of(c, 4, 1, DType::kF32)) vocab.push_back(p.vocab);
  EXPECT_EQ(vocab, (std::vector<Range>{{0, 1}, {1, 2}, {2, 2}, {2, 2}}));
}

TEST(PartitionTest, PipelineStagesTileTheLayersAndRanksAreStageMajor) {
  for (const ModelConfig& c : {real_config(), micro_config()}) {
    for (int tp : {1, 2, 4}) {
      for (int pp : {1, 2, 3}) {
        SCOPED_TRACE(c.name + " tp " + std::to_string(tp) + " pp " + std::to_string(pp));
        auto plans = plans_of(c, tp, pp);
        ASSERT_EQ(plans.size(), static_cast<size_t>(tp * pp));
        std::vector<Range> stages;
        for (int s = 0; s < pp; ++s) {
          const auto at = static_cast<std::ptrdiff_t>(s) * tp;
          std::vector<RankPlan> group(plans.begin() + at, plans.begin() + at + tp);
          for (const RankPlan& p : group) {
            EXPECT_EQ(p.rank, s * tp + p.tp_rank);
            EXPECT_EQ(p.pp_stage, s);
            EXPECT_EQ(p.layers, group[0].layers);
            EXPECT_EQ(p.first_stage(), s == 0);
            EXPECT_EQ(p.last_stage(), s == pp - 1);
          }
          expect_tp_ranges(c, group, tp);
          EXPECT_GE(group[0].layers.size(), 1);
          stages.push_back(group[0].layers);
        }
        expect_tiles(stages, c.num_layers, "layers");
        // plan_rank agrees with plan_all.
        auto one = plan_rank(c, ParallelSpec{tp, pp, {}}, tp * pp - 1, DType::kBF16, {});
        ASSERT_TRUE(one.ok());
        EXPECT_EQ(one->layers, plans.back().layers);
        EXPECT_EQ(one->vocab, plans.back().vocab);
      }
    }
  }
}

TEST(PartitionTest, ExplicitLayerSplitIsHonoured) {
  const ModelConfig c = micro_config();
  auto plans = plans_of(c, 2, 3, DType::kF32, {1, 5, 2});
  ASSERT_EQ(plans.size(), 6u);
  EXPECT_EQ(plans[0].layers, (Range{0, 1}));
  EXPECT_EQ(plans[1].layers, (Range{0, 1}));
  EXPECT_EQ(plans[2].layers, (Range{1, 6}));
  EXPECT_EQ(plans[5].layers, (Range{6, 8}));
  // The explicit split wins over any byte costs passed in.
  auto p = plan_rank(c, ParallelSpec{1, 2, {7, 1}}, 1, DType::kF32, std::vector<uint64_t>(8, 1));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layers, (Range{7, 8}));
}

TEST(PartitionTest, BalancedSplitHandExamples) {
  auto two = split_layers({1, 1, 1, 10, 1, 1}, 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(*two, (std::vector<Range>{{0, 3}, {3, 6}}));  // largest stage 12 (vs 13)
  auto three = split_layers({1, 1, 1, 10, 1, 1}, 3);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(*three, (std::vector<Range>{{0, 3}, {3, 4}, {4, 6}}));  // 3, 10, 2
  auto even = split_layers({5, 5, 5, 5}, 4);
  ASSERT_TRUE(even.ok());
  EXPECT_EQ(*even, (std::vector<Range>{{0, 1}, {1, 2}, {2, 3}, {3, 4}}));
  // Ties: earlier stages take as many layers as the optimum allows.
  auto tie = split_layers({1, 1, 1, 1, 1}, 2);
  ASSERT_TRUE(tie.ok());
  EXPECT_EQ(*tie, (std::vector<Range>{{0, 3}, {3, 5}}));
  // Byte costs passed to plan_rank drive the split.
  auto p =
      plan_rank(micro_config(), ParallelSpec{1, 2, {}}, 0, DType::kF32, {1, 1, 1, 1, 1, 1, 1, 100});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layers, (Range{0, 7}));
}

// Smallest largest-stage cost over every contiguous split, by enumeration.
uint64_t brute_force_best(const std::vector<uint64_t>& w, size_t from, int stages) {
  if (stages == 1) {
    uint64_t s = 0;
    for (size_t i = from; i < w.size(); ++i) s += w[i];
    return s;
  }
  uint64_t best = UINT64_MAX, head = 0;
  for (size_t end = from + 1; end + static_cast<size_t>(stages - 1) <= w.size(); ++end) {
    head += w[end - 1];
    best = std::min(best, std::max(head, brute_force_best(w, end, stages - 1)));
  }
  return best;
}

TEST(PartitionTest, BalancedSplitIsOptimalOnRandomCosts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<uint64_t> w(1 + rng() % 9);
    for (uint64_t& x : w) x = rng() % 20;
    for (int pp = 1; pp <= static_cast<int>(w.size()); ++pp) {
      auto split = split_layers(w, pp);
      ASSERT_TRUE(split.ok());
      ASSERT_EQ(split->size(), static_cast<size_t>(pp));
      expect_tiles(*split, static_cast<int64_t>(w.size()), "random split");
      uint64_t largest = 0;
      for (const Range& r : *split) {
        EXPECT_GE(r.size(), 1);
        uint64_t s = 0;
        for (int64_t i = r.begin; i < r.end; ++i) s += w[static_cast<size_t>(i)];
        largest = std::max(largest, s);
      }
      EXPECT_EQ(largest, brute_force_best(w, 0, pp)) << "trial " << trial << " pp " << pp;
    }
  }
}

std::string plan_error(const ModelConfig& c, const ParallelSpec& spec, DType t = DType::kBF16,
                       int rank = 0, const std::vector<uint64_t>& bytes = {}) {
  auto one = plan_rank(c, spec, rank, t, bytes);
  auto all = plan_all(c, spec, t, bytes);
  if (one.ok() || (rank == 0 && all.ok())) return "<ok>";
  if (rank == 0) {
    EXPECT_EQ(all.status().message(), one.status().message());
  }
  return one.status().message();
}

TEST(PartitionTest, ErrorsNameTheQuantity) {
  const ModelConfig real = real_config(), micro = micro_config();
  ModelConfig mla24 = real, dense9000 = real, moe100 = real;
  mla24.mla_num_heads = 24, dense9000.intermediate_size = 9000, moe100.moe_intermediate_size = 100;
  const ModelConfig four_layers = with_layers(micro, 4, {3});
  const ModelConfig twelve = with_layers(micro, 12, {3, 7, 11});
  EXPECT_EQ(plan_error(real, {3, 1, {}}), "tensor=3 does not divide 32 KDA heads");
  EXPECT_EQ(plan_error(real, {64, 1, {}}), "tensor=64 does not divide 32 KDA heads");
  EXPECT_EQ(plan_error(mla24, {16, 1, {}}), "tensor=16 does not divide 24 MLA heads");
  EXPECT_EQ(plan_error(dense9000, {16, 1, {}}), "tensor=16 does not divide intermediate_size 9000");
  EXPECT_EQ(plan_error(moe100, {8, 1, {}}), "tensor=8 does not divide moe_intermediate_size 100");
  EXPECT_EQ(plan_error(real, {0, 1, {}}), "tensor=0 must be at least 1");
  EXPECT_EQ(plan_error(real, {1, 0, {}}), "pipeline=0 must be at least 1");
  EXPECT_EQ(plan_error(four_layers, {1, 5, {}}), "pipeline=5 exceeds 4 layers");
  EXPECT_EQ(plan_error(twelve, {1, 2, {4, 6}}), "layer_split sums to 10, model has 12 layers");
  EXPECT_EQ(plan_error(micro, {1, 3, {4, 4}}), "layer_split lists 2 stages, pipeline=3");
  EXPECT_EQ(plan_error(micro, {1, 2, {8, 0}}),
            "layer_split stage 1 has 0 layers; every stage needs at least 1");
  EXPECT_EQ(plan_error(micro, {2, 2, {}}, DType::kF32, 4),
            "rank 4 is outside 0..3 (tensor=2 × pipeline=2)");
  EXPECT_EQ(plan_error(micro, {2, 2, {}}, DType::kF32, -1),
            "rank -1 is outside 0..3 (tensor=2 × pipeline=2)");
  EXPECT_EQ(plan_error(micro, {1, 2, {}}, DType::kF32, 0, {1, 2, 3}),
            "layer_bytes has 3 entries, model has 8 layers");
  auto split = split_layers({1, 2}, 3);
  ASSERT_FALSE(split.ok());
  EXPECT_EQ(split.status().message(), "pipeline=3 exceeds 2 layers");
  split = split_layers({1, 2}, 0);
  ASSERT_FALSE(split.ok());
  EXPECT_EQ(split.status().message(), "pipeline=0 must be at least 1");
}

TEST(PartitionTest, QuantisedRowParallelSlicesStayBlockAligned) {
  const ModelConfig micro = micro_config();
  EXPECT_EQ(plan_error(micro, {2, 1, {}}, DType::kQ8_0), "<ok>");
  EXPECT_EQ(plan_error(micro, {4, 1, {}}, DType::kF16), "<ok>");
  EXPECT_EQ(plan_error(micro, {4, 1, {}}, DType::kQ8_0),
            "tensor=4 cuts routed expert down_proj into slices of 16 input columns, not a "
            "multiple of the q8_0 block of 32");
  ModelConfig kda8 = micro, mla8 = micro, dense96 = micro;
  kda8.kda_head_dim = 8, mla8.v_head_dim = 8, dense96.intermediate_size = 96;
  EXPECT_EQ(plan_error(kda8, {2, 1, {}}, DType::kQ8_0),
            "tensor=2 cuts KDA o_proj into slices of 16 input columns, not a multiple of the "
            "q8_0 block of 32");
  EXPECT_EQ(plan_error(mla8, {2, 1, {}}, DType::kQ8_0),
            "tensor=2 cuts MLA o_proj into slices of 16 input columns, not a multiple of the "
            "q8_0 block of 32");
  EXPECT_EQ(plan_error(dense96, {2, 1, {}}, DType::kQ8_0),
            "tensor=2 cuts dense MLP down_proj into slices of 48 input columns, not a multiple "
            "of the q8_0 block of 32");
  for (int tp : {1, 2, 4, 8})
    EXPECT_EQ(plan_error(real_config(), {tp, 1, {}}, DType::kQ8_0), "<ok>");
}

// k-quant super-blocks are 256 wide. A matrix whose rows are not whole super-blocks is stored in
// a 32-block type by k-quant files (micro's 128-wide o_proj rows), so only 32-alignment applies
// to it; the real shape splits into whole super-blocks up to TP 4.
TEST(PartitionTest, KQuantRowParallelSlicesStayWholeSuperBlocks) {
  EXPECT_EQ(plan_error(micro_config(), {1, 1, {}}, DType::kQ4_K), "<ok>");
  ModelConfig dense96 = micro_config();
  dense96.intermediate_size = 96;
  EXPECT_EQ(plan_error(dense96, {2, 1, {}}, DType::kQ4_K),
            "tensor=2 cuts dense MLP down_proj into slices of 48 input columns, not a multiple "
            "of the q8_0 block of 32");
  for (int tp : {1, 2, 4}) {
    EXPECT_EQ(plan_error(real_config(), {tp, 1, {}}, DType::kQ4_K), "<ok>");
    EXPECT_EQ(plan_error(real_config(), {tp, 1, {}}, DType::kQ6_K), "<ok>");
  }
  EXPECT_EQ(plan_error(real_config(), {8, 1, {}}, DType::kQ6_K),
            "tensor=8 cuts dense MLP down_proj into slices of 1152 input columns, not a multiple "
            "of the q6_k block of 256");
}

// Independent byte counts: `m(rows, cols)` = a matrix in the weight dtype.
uint64_t mat(DType t, int64_t rows, int64_t cols) {
  return static_cast<uint64_t>(rows * dtype_row_bytes(t, cols));
}

uint64_t replicated_bytes(const ModelConfig& c, int64_t l, DType t) {
  const int64_t D = c.hidden_size;
  uint64_t b = 4 * 2 * D;
  b += c.is_kda(l) ? 2 * mat(t, c.kda_gate_rank, D) + 4 * c.kda_head_dim
                   : mat(t, c.kv_lora_rank + c.qk_rope_head_dim, D) + 4 * c.kv_lora_rank;
  if (c.is_moe(l)) {
    b += mat(t == DType::kQ8_0 ? DType::kF32 : t, c.num_experts, D) + 4 * c.num_experts;
  }
  return b;
}

TEST(PartitionTest, LayerBytesMatchTheReleaseParameterCount) {
  const ModelConfig c = real_config();
  const std::vector<uint64_t> f32 = layer_weight_bytes(c, DType::kF32);
  ASSERT_EQ(f32.size(), 27u);
  // kimi-linear.md §1 per-block counts (+ two norms per layer).
  EXPECT_EQ(f32[0], 4ull * (39514272 + 63700992 + 2 * 2304));
  EXPECT_EQ(f32[1], 4ull * (39514272 + 1819607296 + 2 * 2304));
  EXPECT_EQ(f32[3], 4ull * (29114880 + 1819607296 + 2 * 2304));
  uint64_t total = 0;
  for (uint64_t b : pipeline_balance_bytes(c, DType::kF32)) total += b;
  EXPECT_EQ(total, 4ull * 49122681728ull);
  // bf16: matrices 2 bytes, small vectors still f32.
  const uint64_t kda_small = 3 * 4096 * 4 + 32 + 4096 + 128, kda_all = 39514272;
  EXPECT_EQ(layer_weight_bytes(c, DType::kBF16)[0],
            2 * (kda_all - kda_small) + 4 * kda_small + 2 * 63700992 + 4 * 2 * 2304);
}

// Summed over one stage's TP group, the weight bytes are the stage's whole weights plus
// (TP − 1) copies of everything replicated.
void expect_memory_adds_up(const ModelConfig& c, int tp, int pp, DType t) {
  SCOPED_TRACE(c.name + " tp " + std::to_string(tp) + " pp " + std::to_string(pp) + " " +
               std::string(dtype_name(t)));
  const std::vector<RankPlan> plans = plans_of(c, tp, pp, t);
  const std::vector<uint64_t> layers = layer_weight_bytes(c, t);
  const uint64_t table = mat(t, c.vocab_size, c.hidden_size);
  for (int s = 0; s < pp; ++s) {
    const RankPlan& lead = plans[static_cast<size_t>(s * tp)];
    uint64_t whole = 0, replicated = 0, summed = 0, mla_token = 0;
    for (int64_t l = lead.layers.begin; l < lead.layers.end; ++l) {
      whole += layers[static_cast<size_t>(l)];
      replicated += replicated_bytes(c, l, t);
      mla_token += c.is_kda(l) ? 0 : 4 * c.mla_latent_dim();
    }
    if (lead.first_stage()) whole += table;
    if (lead.last_stage()) whole += table + 4 * c.hidden_size, replicated += 4 * c.hidden_size;
    for (int r = 0; r < tp; ++r) {
      const RankMemory m = estimate_rank_memory(c, plans[static_cast<size_t>(s * tp + r)], t);
      summed += m.weight_bytes;
      EXPECT_EQ(m.mla_bytes_per_token, mla_token);  // replicated, not sharded
    }
    EXPECT_EQ(summed, whole + static_cast<uint64_t>(tp - 1) * replicated);
  }
}

TEST(PartitionTest, RankMemorySumsToTotalPlusReplicatedCopies) {
  for (int tp : {1, 2, 4, 8}) {
    for (int pp : {1, 2, 3}) {
      expect_memory_adds_up(real_config(), tp, pp, DType::kBF16);
      expect_memory_adds_up(real_config(), tp, pp, DType::kQ8_0);
      if (tp <= 4) expect_memory_adds_up(micro_config(), tp, pp, DType::kF32);
    }
  }
  expect_memory_adds_up(micro_config(), 2, 2, DType::kQ8_0);
  ModelConfig tied = micro_config();
  tied.tie_word_embeddings = true;
  // One stage holding both ends keeps a single table.
  const RankPlan p = plans_of(tied, 1, 1, DType::kF32)[0];
  const RankMemory m = estimate_rank_memory(tied, p, DType::kF32);
  uint64_t layers = 0;
  for (uint64_t b : layer_weight_bytes(tied, DType::kF32)) layers += b;
  EXPECT_EQ(m.weight_bytes, layers + mat(DType::kF32, 640, 128) + 4 * 128);
}

TEST(PartitionTest, StateBytesCoverOnlyTheRanksHeadsAndLayers) {
  const ModelConfig c = real_config();
  const StateSizes whole = StateSizes::from_config(c);
  for (int tp : {1, 2, 4, 8}) {
    const RankMemory m = estimate_rank_memory(c, plans_of(c, tp, 1)[0], DType::kBF16);
    EXPECT_EQ(m.kda_state_bytes_per_sequence,
              static_cast<uint64_t>(whole.kda_bytes_per_slot() / tp));
    EXPECT_EQ(m.mla_bytes_per_token, static_cast<uint64_t>(whole.mla_bytes_per_token()));
  }
  // TP 8: per KDA layer 3 × 3 × 512 conv + 4 × 128 × 128 recurrent floats.
  const RankMemory m8 = estimate_rank_memory(c, plans_of(c, 8, 1)[5], DType::kBF16);
  EXPECT_EQ(m8.kda_state_bytes_per_sequence, 20u * (3 * 3 * 512 + 4 * 128 * 128) * 4);
  EXPECT_EQ(m8.mla_bytes_per_token, 7u * 576 * 4);
  // Pipeline stages split the state by their layers.
  const std::vector<RankPlan> pp = plans_of(c, 2, 2, DType::kBF16, {12, 15});
  const RankMemory a = estimate_rank_memory(c, pp[0], DType::kBF16);
  const RankMemory b = estimate_rank_memory(c, pp[2], DType::kBF16);
  EXPECT_EQ(a.kda_state_bytes_per_sequence + b.kda_state_bytes_per_sequence,
            static_cast<uint64_t>(whole.kda_bytes_per_slot() / 2));
  EXPECT_EQ(a.mla_bytes_per_token, 3u * 576 * 4);  // MLA layers 3, 7, 11
  EXPECT_EQ(b.mla_bytes_per_token, 4u * 576 * 4);
}

TEST(PartitionTest, RealModelPerRankMemoryForTheRecord) {
  const ModelConfig c = real_config();
  for (DType t : {DType::kBF16, DType::kQ8_0}) {
    for (int tp : {1, 2, 4, 8}) {
      const std::vector<RankPlan> plans = plans_of(c, tp, 1, t);
      const RankMemory m = estimate_rank_memory(c, plans[0], t);
      std::printf("[%s TP %d] %s\n", std::string(dtype_name(t)).c_str(), tp,
                  describe_plan(c, plans[0], m).c_str());
      std::printf(
          "  weight_bytes=%llu kda_state_bytes_per_sequence=%llu "
          "mla_bytes_per_token=%llu\n",
          static_cast<unsigned long long>(m.weight_bytes),
          static_cast<unsigned long long>(m.kda_state_bytes_per_sequence),
          static_cast<unsigned long long>(m.mla_bytes_per_token));
    }
  }
  for (int pp : {2, 3}) {
    for (const RankPlan& p : plans_of(c, 8, pp)) {
      if (p.tp_rank != 0) continue;
      std::printf("[bf16 TP 8 PP %d] %s\n", pp,
                  describe_plan(c, p, estimate_rank_memory(c, p, DType::kBF16)).c_str());
    }
  }
  const RankPlan p = plans_of(c, 8, 1)[0];
  const std::string text = describe_plan(c, p, estimate_rank_memory(c, p, DType::kBF16));
  EXPECT_NE(text.find("KDA heads [0, 4) of 32"), std::string::npos) << text;
  EXPECT_NE(text.find("embedding and lm_head rows [0, 20480) of 163840"), std::string::npos);
}

}  // namespace
}  // namespace kiln
