// Topology YAML: every file in tests/data/topology is a defect rejected with its expected message;
// the example configs parse, validate, place their ranks and read back their own dump; overrides
// are checked like file keys.
#include "cluster/topology/topology.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "cluster/topology/topology_schema.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

const fs::path kBadDir = fs::path(KILN_TEST_DATA_DIR) / "topology";
const fs::path kConfigDir = fs::path(KILN_TEST_DATA_DIR) / ".." / ".." / "configs";

// One defect class per file, and a substring its error message must contain.
const std::map<std::string, std::string>& bad_files() {
  static const std::map<std::string, std::string> table = {
      {"empty.yaml", "empty file"},
      {"only-comments.yaml", "empty file"},
      {"top-level-sequence.yaml", "top level must be a mapping of topology keys"},
      {"top-level-scalar.yaml", "top level must be a mapping of topology keys"},
      {"syntax-unclosed-flow.yaml", "YAML syntax error at line 3"},
      {"syntax-tab-indent.yaml", "YAML syntax error at line 2"},
      {"two-documents.yaml", "2 YAML documents"},
      {"unknown-top-key.yaml", "unknown key 'backnd' (line 1) (did you mean 'backend'?)"},
      {"unknown-nested-key.yaml", "unknown key 'parallel.tensr' (line 4)"},
      {"unknown-node-key.yaml", "unknown key 'nodes[0].slot' (line 3) (did you mean 'slots'?)"},
      {"duplicate-top-key.yaml", "duplicate key 'backend' (line 3)"},
      {"duplicate-nested-key.yaml", "duplicate key 'parallel.tensor' (line 4)"},
      {"string-for-int.yaml", "parallel.tensor: expected an integer, got 'two' (line 2)"},
      {"float-for-int.yaml", "parallel.tensor: expected an integer, got '2.5' (line 2)"},
      {"quoted-int.yaml", "server.port: expected an integer, got the string '8080' (line 2)"},
      {"zero-tensor.yaml", "parallel.tensor: must be between 1 and 4096, got 0 (line 2)"},
      {"negative-pipeline.yaml", "parallel.pipeline: must be between 1 and 4096, got -2 (line 2)"},
      {"port-out-of-range.yaml", "server.port: must be between 1 and 65535, got 70000 (line 3)"},
      {"int-overflow.yaml",
       "scheduler.max_batch_tokens: expected an integer, got '99999999999999999999' (line 2)"},
      {"missing-value.yaml", "server.port: missing value (expected an integer) (line 2)"},
      {"unknown-backend.yaml", "backend: must be one of cpu, cuda, got 'tpu' (line 1)"},
      {"unknown-dtype.yaml",
       "model.dtype: must be one of auto, f32, f16, bf16, q8_0, got 'f8' (line 3)"},
      {"section-not-mapping.yaml", "parallel: expected a mapping of keys, got '4' (line 1)"},
      {"nodes-not-sequence.yaml", "nodes: expected a sequence of nodes"},
      {"node-not-mapping.yaml", "nodes[0]: expected a mapping with host and slots or gpus"},
      {"node-missing-host.yaml", "nodes[0]: missing 'host' (line 2)"},
      {"node-empty-host.yaml", "nodes[0]: host must be a non-empty name"},
      {"node-host-with-space.yaml", "got 'node a'"},
      {"duplicate-hosts.yaml", "nodes[1] (host 'A'): duplicate host"},
      {"duplicate-gpu.yaml", "nodes[0] (host 'a'): GPU id 1 listed twice"},
      {"negative-gpu.yaml", "nodes[0].gpus[1]: GPU id must be between 0 and 1023, got -1"},
      {"world-size-mismatch.yaml",
       "world size tensor x pipeline = 2 x 2 = 4 ranks, but the nodes provide 3 slots (3 on 'a')"},
      {"cuda-node-without-gpus.yaml", "nodes[0] (host 'a'): backend cuda needs 'gpus'"},
      {"slots-gpus-mismatch.yaml", "slots 4 does not match 2 GPU ids"},
      {"layer-split-count.yaml", "parallel.layer_split has 3 entries but parallel.pipeline is 2"},
      {"layer-split-zero.yaml", "parallel.layer_split[1]: must be between 1 and 4096, got 0"},
      {"layer-split-not-list.yaml", "parallel.layer_split: expected a sequence of layer counts"},
      {"tp-straddles-nodes.yaml",
       "the TP group of stage 1 (ranks 2-3) straddles nodes 'a' and 'b'"},
      {"bad-memory-size.yaml",
       "nodes[0].memory_per_rank: expected a byte size (e.g. 4096 or 80GiB), got 'lots' (line 4)"},
      {"memory-size-overflow.yaml", "byte size '99999999999TiB' does not fit in 63 bits"},
      {"prefill-over-batch.yaml",
       "scheduler.prefill_chunk 4096 exceeds scheduler.max_batch_tokens 2048"},
      {"nan-timeout.yaml", "scheduler.drain_timeout_s: expected a finite number, got '.nan'"},
      {"bool-not-true-false.yaml",
       "server.metrics_require_key: expected true or false, got 'yes' (line 2)"},
      {"page-tokens-not-power-of-two.yaml", "cache.page_tokens must be a power of two, got 12"},
      {"non-scalar-key.yaml", "top level: keys must be plain names, got a sequence (line 1)"},
      {"server-host-empty.yaml", "server.host: must not be empty (line 2)"},
      {"several-problems.yaml", "unknown key 'cache.pages' (line 7)"},
      {"string-invalid-utf8.yaml", "model.path: not valid UTF-8 (byte 8 of the string) (line 2)"},
      {"string-invalid-utf8-host.yaml", "nodes[0].host: not valid UTF-8 (byte 1 of the string)"},
      {"syntax-parser-loop.yaml", "YAML syntax error at line 1, column 1: unexpected ','"},
      {"string-nul.yaml", "model.name: contains a NUL character (line 3)"},
  };
  return table;
}

TEST(TopologyDocs, ReadmeDocumentsEveryKey) {
  std::ifstream in(kConfigDir / "README.md");
  std::stringstream text;
  text << in.rdbuf();
  ASSERT_FALSE(text.str().empty());
  for (const topology_detail::Field& f : topology_detail::topology_fields()) {
    std::string key = f.path == "nodes" ? "nodes[i].host" : f.path;
    EXPECT_NE(text.str().find("| `" + key + "` |"), std::string::npos) << key;
  }
  for (const char* key : {"slots", "gpus", "memory_per_rank"}) {
    EXPECT_NE(text.str().find(std::string("| `nodes[i].") + key + "` |"), std::string::npos) << key;
  }
}

TEST(TopologyBadFiles, EachIsRejectedWithItsMessage) {
  ASSERT_GE(bad_files().size(), 20u);
  for (const auto& [file, expected] : bad_files()) {
    fs::path path = kBadDir / file;
    ASSERT_TRUE(fs::exists(path)) << path;
    auto t = load_topology(path.string());
    ASSERT_FALSE(t.ok()) << file << " was accepted";
    const std::string msg = t.status().message();
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << file;
    EXPECT_NE(msg.find(expected), std::string::npos)
        << file << ": expected '" << expected << "' in:\n"
        << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << file << ": message does not name the file";
  }
}

TEST(TopologyBadFiles, EveryFileHasAnExpectation) {
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(kBadDir)) {
    on_disk.insert(entry.path().filename().string());
  }
  for (const std::string& f : on_disk) EXPECT_TRUE(bad_files().contains(f)) << f;
  EXPECT_EQ(on_disk.size(), bad_files().size());
}

TEST(TopologyBadFiles, ReportsEveryProblemNotJustTheFirst) {
  auto t = load_topology((kBadDir / "several-problems.yaml").string());
  ASSERT_FALSE(t.ok());
  const std::string msg = t.status().message();
  EXPECT_NE(msg.find("parallel.tensor: must be between 1 and 4096, got 0 (line 3)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("server.port: must be between 1 and 65535, got 0 (line 5)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("unknown key 'cache.pages' (line 7)"), std::string::npos) << msg;
  EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 2) << msg;
}

TEST(TopologyParse, NoExceptionEscapesOnGarbage) {
  const std::vector<std::string> inputs = {
      std::string("\0\xff\xfe{[", 5), "[[[[[[[[[[[[[[[[[[[[",
      "{a: {b: {c: [1, {d: *x}]}}}",  std::string(2000, '[') + std::string(2000, ']'),
      "model: !!binary AAAA\n",       "parallel: &p {tensor: 2}\nserver: *p\n",
      ",",                             ", b]\n: ]\n: 1\n",  // yaml-cpp 0.7's LoadAll never returns
      std::string(1 << 21, ' ')};
  for (const std::string& in : inputs) {
    auto t = parse_topology(in, "garbage.yaml");
    EXPECT_FALSE(t.ok());
    if (!t.ok()) {
      EXPECT_NE(t.status().message().find("garbage.yaml"), std::string::npos);
    }
  }
}

// A file near the size limit made of misspelt keys: the message lists the first 20 and counts the
// rest (and finding near misses stays linear in the key length).
TEST(TopologyParse, ManyProblemsAreCountedNotAllListed) {
  std::string yaml;
  for (int i = 0; yaml.size() < (1u << 20) - 400; ++i) {
    yaml += (i % 2 ? std::string("k") : std::string(300, 'x')) + std::to_string(i) + ": 1\n";
  }
  auto t = parse_topology(yaml, "many.yaml");
  ASSERT_FALSE(t.ok());
  const std::string msg = t.status().message();
  EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 20) << msg.substr(0, 2000);
  EXPECT_NE(msg.find("many.yaml: unknown key 'k1' (line 2)"), std::string::npos) << msg.substr(0, 300);
  EXPECT_NE(msg.find("more problems"), std::string::npos);
  EXPECT_LT(msg.size(), 20000u);
}

TEST(TopologyParse, MinimalFileTakesTheDefaults) {
  auto t = parse_topology("backend: cpu\n", "/etc/kiln/min.yaml");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(*t, Topology{});
  std::vector<NodeSpec> nodes = effective_nodes(*t);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].host, "localhost");
  EXPECT_EQ(nodes[0].slots, 1);
}

TEST(TopologyParse, RelativePathsResolveAgainstTheFile) {
  auto t = parse_topology("model:\n  path: ../models/m\nserver:\n  api_key_file: keys\n",
                          "/etc/kiln/conf.yaml");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->model.path, "/etc/models/m");
  EXPECT_EQ(t->server.api_key_file, "/etc/kiln/keys");
  auto abs = parse_topology("model:\n  path: /data/m.gguf\n", "/etc/kiln/conf.yaml");
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(abs->model.path, "/data/m.gguf");
}

TEST(TopologyParse, SizesAcceptUnits) {
  auto t = parse_topology(
      "nodes:\n  - {host: a, slots: 1, memory_per_rank: 80GiB}\nserver:\n  max_body_bytes: 2MB\n",
      "s.yaml");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->nodes[0].memory_bytes, int64_t{80} << 30);
  EXPECT_EQ(t->server.max_body_bytes, 2000000);
}

TEST(TopologyExamples, AllParseAndValidate) {
  for (const char* name : {"local-cpu.yaml", "cpu-tp2.yaml", "cpu-tp2-pp2.yaml", "node-8gpu.yaml",
                           "two-nodes-16gpu.yaml"}) {
    auto t = load_topology((kConfigDir / name).string());
    ASSERT_TRUE(t.ok()) << name << ": " << t.status().to_string();
    EXPECT_TRUE(validate_topology(*t).empty()) << name;
    EXPECT_TRUE(fs::path(t->model.path).is_absolute()) << name;
  }
}

TEST(TopologyExamples, DumpReadsBackEqual) {
  for (const char* name : {"local-cpu.yaml", "cpu-tp2.yaml", "cpu-tp2-pp2.yaml", "node-8gpu.yaml",
                           "two-nodes-16gpu.yaml"}) {
    auto t = load_topology((kConfigDir / name).string());
    ASSERT_TRUE(t.ok()) << name;
    std::string text = dump_topology(*t);
    auto back = parse_topology(text, "dump.yaml");
    ASSERT_TRUE(back.ok()) << name << ": " << back.status().to_string() << "\n" << text;
    EXPECT_EQ(*back, *t) << name << "\n" << text;
  }
}

TEST(TopologyExamples, DumpOfEveryNonDefaultValueReadsBackEqual) {
  Topology t;
  t.model = {"/m/x", "bf16", "kimi \"q\": #1"};
  t.parallel = {2, 2, {13, 14}};
  t.nodes = {{"a", 2, {}, 1234}, {"b", 2, {}, 0}};
  t.server.cors_allow_origins = {"https://a.example", "http://b:3000"};
  t.server.metrics_require_key = true;
  t.server.read_timeout_s = 0.1;
  t.scheduler.drain_timeout_s = 2.5;
  t.cache = {32, 4096, 1000};
  t.threads = 3;
  auto back = parse_topology(dump_topology(t), "dump.yaml");
  ASSERT_TRUE(back.ok()) << back.status().to_string() << "\n" << dump_topology(t);
  EXPECT_EQ(*back, t) << dump_topology(t);
}

std::vector<RankPlacement> placement_of(const char* config) {
  auto t = load_topology((kConfigDir / config).string());
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  if (!t.ok()) return {};
  auto p = place_ranks(*t);
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  return p.ok() ? *p : std::vector<RankPlacement>{};
}

TEST(TopologyPlacement, TwoNodesSixteenGpus) {
  std::vector<RankPlacement> p = placement_of("two-nodes-16gpu.yaml");
  ASSERT_EQ(p.size(), 16u);
  for (int r = 0; r < 16; ++r) {
    const RankPlacement& rp = p[static_cast<size_t>(r)];
    EXPECT_EQ(rp,
              (RankPlacement{r, r % 8, r / 8, r < 8 ? "gpu-node-a" : "gpu-node-b", r % 8, r % 8}));
  }
}

TEST(TopologyPlacement, ExampleConfigs) {
  std::vector<RankPlacement> local = placement_of("local-cpu.yaml");
  ASSERT_EQ(local.size(), 1u);
  EXPECT_EQ(local[0], (RankPlacement{0, 0, 0, "localhost", 0, -1}));
  std::vector<RankPlacement> tp2 = placement_of("cpu-tp2.yaml");
  ASSERT_EQ(tp2.size(), 2u);
  EXPECT_EQ(tp2[1], (RankPlacement{1, 1, 0, "localhost", 1, -1}));
  std::vector<RankPlacement> pp = placement_of("cpu-tp2-pp2.yaml");
  ASSERT_EQ(pp.size(), 4u);
  EXPECT_EQ(pp[2], (RankPlacement{2, 0, 1, "localhost", 2, -1}));
  EXPECT_EQ(pp[3], (RankPlacement{3, 1, 1, "localhost", 3, -1}));
  std::vector<RankPlacement> gpu8 = placement_of("node-8gpu.yaml");
  ASSERT_EQ(gpu8.size(), 8u);
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(gpu8[static_cast<size_t>(r)], (RankPlacement{r, r, 0, "localhost", r, r}));
  }
}

TEST(TopologyPlacement, GpuIdsFollowTheNodeList) {
  auto t = parse_topology(
      "backend: cuda\nparallel: {tensor: 2}\nnodes:\n  - {host: a, gpus: [3, 5]}\n", "g.yaml");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  auto p = place_ranks(*t);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].gpu, 3);
  EXPECT_EQ((*p)[1].gpu, 5);
}

TEST(TopologyPlacement, TensorGroupMaySpanWholeNodes) {
  auto t = parse_topology(
      "parallel: {tensor: 4}\nnodes: [{host: a, slots: 2}, {host: b, slots: 2}]\n", "span.yaml");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  auto p = place_ranks(*t);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ((*p)[3], (RankPlacement{3, 3, 0, "b", 1, -1}));
  auto half = parse_topology(
      "parallel: {tensor: 4, pipeline: 2}\nnodes: [{host: a, slots: 2}, {host: b, slots: 3}, "
      "{host: c, slots: 3}]\n",
      "half.yaml");
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.status().message().find("stage 1 (ranks 4-7) straddles nodes 'b' and 'c'"),
            std::string::npos)
      << half.status().message();
}

TEST(TopologyValidate, ListsEveryProblemOfAStructBuiltInCode) {
  Topology t;
  t.backend = "tpu";
  t.parallel.pipeline = 2;
  t.parallel.layer_split = {27};
  t.server.port = 0;
  t.server.host = "";
  t.nodes = {{"", 1, {}, 0}, {"b", -1, {2, 2}, 0}};
  std::vector<std::string> p = validate_topology(t);
  auto has = [&](const std::string& s) {
    return std::any_of(p.begin(), p.end(),
                       [&](const std::string& m) { return m.find(s) != std::string::npos; });
  };
  EXPECT_TRUE(has("backend: must be one of cpu, cuda, got 'tpu'"));
  EXPECT_TRUE(has("server.port: must be between 1 and 65535, got 0"));
  EXPECT_TRUE(has("server.host: must not be empty"));
  EXPECT_TRUE(has("parallel.layer_split has 1 entries but parallel.pipeline is 2"));
  EXPECT_TRUE(has("nodes[0]: host must be a non-empty name"));
  EXPECT_TRUE(has("nodes[1] (host 'b'): slots must be between 1 and 4096, got -1"));
  EXPECT_TRUE(has("nodes[1] (host 'b'): GPU id 2 listed twice"));
  EXPECT_GE(p.size(), 7u);
}

TEST(TopologyOverride, GoodAssignments) {
  Topology t;
  for (const char* a :
       {"parallel.tensor=2", "server.port=9000", "backend=cuda", "parallel.layer_split=[13, 14]",
        "parallel.pipeline=2", "nodes=[{host: a, gpus: [0, 1]}, {host: b, gpus: [0, 1]}]",
        "model.path=/models/x", "server.max_body_bytes=1MiB", "scheduler.drain_timeout_s=5"}) {
    Status s = apply_override(t, a);
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  EXPECT_EQ(t.parallel.tensor, 2);
  EXPECT_EQ(t.server.port, 9000);
  EXPECT_EQ(t.parallel.layer_split, (std::vector<int64_t>{13, 14}));
  EXPECT_EQ(t.nodes.size(), 2u);
  EXPECT_EQ(t.model.path, "/models/x");
  EXPECT_EQ(t.server.max_body_bytes, 1 << 20);
  EXPECT_EQ(t.scheduler.drain_timeout_s, 5.0);
  EXPECT_TRUE(validate_topology(t).empty());
}

TEST(TopologyOverride, BadAssignmentsNameTheKeyAndLeaveTheValue) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"parallel.tensr=2", "unknown key 'parallel.tensr' (did you mean 'parallel.tensor'?)"},
      {"parallel=2", "'parallel' is a section"},
      {"server.port", "expected key=value"},
      {"=3", "expected key=value"},
      {"server.port=abc", "server.port: expected an integer, got 'abc'"},
      {"server.port=70000", "server.port: must be between 1 and 65535, got 70000"},
      {"server.port=", "server.port: missing value"},
      {"parallel.layer_split=[1, 2", "value is not valid YAML"},
      {"backend=tpu", "backend: must be one of cpu, cuda, got 'tpu'"},
      {"nodes=[{host: a, slot: 2}]", "unknown key 'nodes[0].slot'"},
      {"model.name=k\xb0", "model.name: not valid UTF-8 (byte 1 of the string)"},
      {"server.cors_allow_origins=[\"a\\0b\"]", "contains a NUL character"},
  };
  for (const auto& [assignment, expected] : cases) {
    Topology t;
    Status s = apply_override(t, assignment);
    ASSERT_FALSE(s.ok()) << assignment;
    EXPECT_NE(s.message().find(expected), std::string::npos) << assignment << ": " << s.message();
    EXPECT_NE(s.message().find("override '" + assignment + "'"), std::string::npos);
    EXPECT_EQ(t, Topology{}) << assignment << " changed the topology";
  }
}

TEST(TopologyOverride, CrossKeyRulesAreCheckedAfterAllAssignments) {
  auto local = load_topology((kConfigDir / "local-cpu.yaml").string());
  ASSERT_TRUE(local.ok());
  // The implicit localhost node grows with tensor x pipeline.
  EXPECT_TRUE(apply_overrides(*local, {"parallel.tensor=2", "parallel.pipeline=2"}).ok());
  EXPECT_EQ(place_ranks(*local)->size(), 4u);

  auto tp2 = load_topology((kConfigDir / "cpu-tp2.yaml").string());
  ASSERT_TRUE(tp2.ok());
  Status s = apply_overrides(*tp2, {"parallel.tensor=4", "server.port=x"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("server.port: expected an integer"), std::string::npos);
  Status w = apply_overrides(*tp2, {"parallel.tensor=4"});
  EXPECT_NE(w.message().find("4 ranks, but the nodes provide 2 slots"), std::string::npos)
      << w.message();
  EXPECT_TRUE(apply_overrides(*tp2, {"nodes=[{host: localhost, slots: 4}]"}).ok());
}

}  // namespace
}  // namespace kiln
