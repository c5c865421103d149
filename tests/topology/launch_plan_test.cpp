// Launch plan: hostfile, mpirun argv and placement for the example configs, and every problem of
// a topology checked against a model reported together.
#include "cluster/topology/launch_plan.h"

#include <gtest/gtest.h>

#include "shard/checkpoint.h"

namespace kiln {
namespace {

Topology example(const std::string& name) {
  auto t = load_topology(std::string(KILN_TEST_DATA_DIR) + "/../../configs/" + name);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? *t : Topology{};
}

std::vector<RankPlacement> placed(const Topology& t) {
  auto p = place_ranks(t);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return p.ok() ? *p : std::vector<RankPlacement>{};
}

LaunchOptions options() {
  LaunchOptions o;
  o.kiln_binary = "/opt/kiln";
  o.config_path = "/c.yaml";
  o.hostfile_path = "/tmp/h";
  return o;
}

std::vector<std::string> head(int np) {
  return {"mpirun", "--hostfile", "/tmp/h", "--map-by", "slot", "--bind-to", "none", "-np",
          std::to_string(np)};
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(LaunchPlanTest, CpuExamplesGiveOneHostfileLineAndPlainArgv) {
  const std::vector<std::pair<std::string, int>> cases = {
      {"local-cpu.yaml", 1}, {"cpu-tp2.yaml", 2}, {"cpu-tp2-pp2.yaml", 4}};
  for (const auto& [name, np] : cases) {
    const auto p = placed(example(name));
    EXPECT_EQ(hostfile_text(p), "localhost slots=" + std::to_string(np) + "\n") << name;
    EXPECT_EQ(rank_gpu_list(p), "") << name;
    EXPECT_EQ(mpirun_argv(p, options()),
              concat(head(np), {"/opt/kiln", "serve", "--config", "/c.yaml"}))
        << name;
  }
}

TEST(LaunchPlanTest, OneNodeEightGpus) {
  const auto p = placed(example("node-8gpu.yaml"));
  EXPECT_EQ(hostfile_text(p), "localhost slots=8\n");
  EXPECT_EQ(mpirun_argv(p, options()),
            concat(head(8), {"-x", "KILN_RANK_GPUS=0,1,2,3,4,5,6,7", "/opt/kiln", "serve",
                             "--config", "/c.yaml"}));
}

TEST(LaunchPlanTest, TwoNodesKeepEachTpGroupInsideItsNode) {
  const auto p = placed(example("two-nodes-16gpu.yaml"));
  ASSERT_EQ(p.size(), 16u);
  EXPECT_EQ(hostfile_text(p), "gpu-node-a slots=8\ngpu-node-b slots=8\n");
  for (const RankPlacement& r : p) {
    EXPECT_EQ(r.host, r.pp_stage == 0 ? "gpu-node-a" : "gpu-node-b") << r.rank;
    EXPECT_EQ(r.tp_rank, r.rank % 8);
    EXPECT_EQ(r.local_rank, r.rank % 8);
    EXPECT_EQ(r.gpu, r.rank % 8);
  }
  LaunchOptions o = options();
  o.as_root = true;
  o.command = "serve";
  o.overrides = {"server.port=9000"};
  o.mpirun_args = {"--mca", "btl", "tcp,self"};
  o.rank_args = {"--verbose"};
  std::vector<std::string> want = head(16);
  want.insert(want.begin() + 1, "--allow-run-as-root");
  want = concat(want, {"-x", "KILN_RANK_GPUS=0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7", "--mca", "btl",
                       "tcp,self", "/opt/kiln", "serve", "--config", "/c.yaml", "--set",
                       "server.port=9000", "--verbose"});
  EXPECT_EQ(mpirun_argv(p, o), want);
}

TEST(LaunchPlanTest, GpuListFollowsEachNodesDeviceIds) {
  Topology t;
  t.backend = "cuda";
  t.parallel.tensor = 2;
  t.parallel.pipeline = 2;
  t.nodes = {{"a", 0, {3, 1}, 0}, {"b", 0, {6, 7}, 0}};
  const auto p = placed(t);
  EXPECT_EQ(rank_gpu_list(p), "3,1,6,7");
  EXPECT_EQ(hostfile_text(p), "a slots=2\nb slots=2\n");
}

TEST(LaunchPlanTest, ShellLineQuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(shell_command_line({"mpirun", "-np", "2", "--prompt", "it's a b", ""}),
            "mpirun -np 2 --prompt 'it'\\''s a b' ''");
}

class LaunchCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ck = Checkpoint::open(std::string(KILN_TEST_DATA_DIR) + "/golden/kimi-micro-f32.gguf");
    ASSERT_TRUE(ck.ok()) << ck.status().message();
    config_ = (*ck)->config();
  }
  ModelConfig config_;
};

TEST_F(LaunchCheckTest, GoodLayoutGivesPlacementAndMemory) {
  Topology t;
  t.parallel.tensor = 2;
  t.parallel.pipeline = 2;
  t.parallel.layer_split = {3, 5};
  t.nodes = {{"localhost", 4, {}, int64_t{1} << 30}};
  const LaunchCheck c = check_launch(t, &config_, DType::kF32);
  ASSERT_TRUE(c.ok()) << c.problems.front();
  ASSERT_EQ(c.ranks.size(), 4u);
  EXPECT_EQ(c.ranks[0].layers, (Range{0, 3}));
  EXPECT_EQ(c.ranks[3].layers, (Range{3, 8}));
  EXPECT_EQ(c.ranks[3].place.tp_rank, 1);
  EXPECT_GT(c.ranks[0].memory.weight_bytes, 0u);
  EXPECT_EQ(c.ranks[0].required_bytes, required_rank_bytes(t, config_, c.ranks[0].memory));
  EXPECT_NE(format_placement(c.ranks).find("localhost"), std::string::npos);
}

TEST_F(LaunchCheckTest, EveryProblemIsListed) {
  Topology t;
  t.parallel.tensor = 3;
  t.parallel.pipeline = 2;
  t.parallel.layer_split = {4, 5};
  t.nodes = {{"localhost", 4, {}, 1000}};
  const LaunchCheck c = check_launch(t, &config_, DType::kF32);
  std::string all;
  for (const std::string& p : c.problems) all += p + "\n";
  EXPECT_NE(all.find("world size"), std::string::npos) << all;
  EXPECT_NE(all.find("does not divide 4 KDA heads"), std::string::npos) << all;
  EXPECT_NE(all.find("layer_split sums to 9"), std::string::npos) << all;
  EXPECT_NE(all.find("memory_per_rank is 1000 B"), std::string::npos) << all;
  EXPECT_TRUE(c.ranks.empty());
}

TEST_F(LaunchCheckTest, MemoryIsComparedPerNode) {
  Topology t;
  t.parallel.tensor = 2;
  t.nodes = {{"a", 1, {}, int64_t{1} << 30}, {"b", 1, {}, 1 << 20}};
  const LaunchCheck c = check_launch(t, &config_, DType::kF32);
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_NE(c.problems[0].find("node 'b': rank 1 needs"), std::string::npos) << c.problems[0];
}

TEST_F(LaunchCheckTest, CacheTokensFollowPagesOrSequencesTimesContext) {
  Topology t;
  EXPECT_EQ(cache_tokens_per_rank(t, config_), 16 * config_.max_context);
  t.cache.max_context = 100;
  EXPECT_EQ(cache_tokens_per_rank(t, config_), 1600);
  t.cache.max_pages = 10;
  EXPECT_EQ(cache_tokens_per_rank(t, config_), 160);
}

// The served context is the model's, capped by cache.max_context and by the rank's whole cache:
// a 16-token cache never advertises the model's context, however large that is.
TEST_F(LaunchCheckTest, ServedContextIsCappedByTheCache) {
  ModelConfig c = config_;
  c.max_context = kMaxConfigTokens;
  Topology t;
  t.scheduler.max_sequences = 1;
  EXPECT_EQ(served_context(t, c), kMaxConfigTokens);
  t.scheduler.max_sequences = 65536;  // the largest topology values: no overflow
  EXPECT_EQ(served_context(t, c), kMaxConfigTokens);
  t.cache.page_tokens = 4;
  t.cache.max_pages = 4;
  EXPECT_EQ(served_context(t, c), 16);
  t.cache.max_context = 8;
  EXPECT_EQ(served_context(t, c), 8);
  t.cache.max_pages = 0;
  t.cache.max_context = 100;
  EXPECT_EQ(served_context(t, c), 100);
  c.max_context = 50;
  EXPECT_EQ(served_context(t, c), 50);
}

// cache.max_context above the model's context sizes nothing: no sequence can hold more. Byte
// counts saturate instead of wrapping.
TEST_F(LaunchCheckTest, CacheSizingIsCappedAndSaturates) {
  Topology t;
  t.cache.max_context = config_.max_context * 1000;
  EXPECT_EQ(sequence_context(t, config_), config_.max_context);
  EXPECT_EQ(cache_tokens_per_rank(t, config_), 16 * config_.max_context);
  ModelConfig huge = config_;
  huge.max_context = int64_t{1} << 62;
  t.cache.max_context = 0;
  EXPECT_EQ(cache_tokens_per_rank(t, huge), INT64_MAX);
  RankMemory m;
  m.weight_bytes = 1000, m.kda_state_bytes_per_sequence = 10, m.mla_bytes_per_token = 384;
  EXPECT_EQ(required_rank_bytes(t, huge, m), UINT64_MAX);
  EXPECT_EQ(required_rank_bytes(t, config_, m),
            1000u + 16u * 10u + 384u * 16u * static_cast<uint64_t>(config_.max_context));
}

// What the ranks on one host need against the memory available there, naming the keys.
TEST_F(LaunchCheckTest, HostMemoryNamesTheKeysAndTheBytes) {
  Topology t;
  t.parallel.tensor = 2;
  t.cache.max_pages = 2147483647;
  const LaunchCheck c = check_launch(t, &config_, DType::kF32);
  ASSERT_TRUE(c.ok()) << c.problems[0];
  const uint64_t workspace = activation_bytes_per_token(config_) * 2048;  // max_batch_tokens
  ASSERT_GT(workspace, 0u);
  const uint64_t both = c.ranks[0].required_bytes + c.ranks[1].required_bytes + 2 * workspace;
  EXPECT_EQ(check_host_memory(t, config_, c, 0, both), std::nullopt);
  const auto p = check_host_memory(t, config_, c, 1, both - 1);
  ASSERT_TRUE(p.has_value());
  EXPECT_NE(p->find("2 rank(s) on this host need"), std::string::npos) << *p;
  EXPECT_NE(p->find("cache.max_pages=2147483647 x cache.page_tokens=16"), std::string::npos) << *p;
  EXPECT_NE(p->find("scheduler.max_batch_tokens=2048"), std::string::npos) << *p;
  EXPECT_NE(p->find("of memory is available"), std::string::npos) << *p;
  // The workspace alone: 2^24 batch tokens.
  Topology big;
  big.scheduler.max_batch_tokens = int64_t{1} << 24;
  const LaunchCheck one = check_launch(big, &config_, DType::kF32);
  ASSERT_TRUE(one.ok());
  const uint64_t need = one.ranks[0].required_bytes + (activation_bytes_per_token(config_) << 24);
  EXPECT_EQ(check_host_memory(big, config_, one, 0, need), std::nullopt);
  const auto q = check_host_memory(big, config_, one, 0, need - 1);
  ASSERT_TRUE(q.has_value());
  EXPECT_NE(q->find("workspace for scheduler.max_batch_tokens=16777216"), std::string::npos) << *q;
}

TEST_F(LaunchCheckTest, UnopenedModelStillChecksStructure) {
  Topology t;
  t.parallel.tensor = 2;
  t.nodes = {{"a", 3, {}, 0}};
  const LaunchCheck c = check_launch(t, nullptr, DType::kF32);
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_NE(c.problems[0].find("world size"), std::string::npos);
}

}  // namespace
}  // namespace kiln
