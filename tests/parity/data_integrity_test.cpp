// The parity tests' data is what its provenance says: every file of tests/data/golden and
// tests/data/reference (README.md and the sums file aside) is listed in that directory's
// SHA256SUMS and hashes to the listed value, so a golden or reference file regenerated or edited
// by mistake fails here, naming the file and both hashes. (The checkpoints the reference logits
// were computed from are checked by reference_test.cpp, which regenerates them anyway.)
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checksums.h"
#include "parity_util.h"

namespace kiln {
namespace {

class DataIntegrityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DataIntegrityTest, Sha256SumsListAndMatchEveryFile) {
  const std::string dir = testing::data_path(GetParam());
  const std::string sums_path = dir + "/SHA256SUMS";
  ASSERT_TRUE(std::filesystem::exists(sums_path)) << sums_path << " is missing";
  const std::vector<testing::SumEntry> entries = testing::read_sha256sums(sums_path);
  ASSERT_FALSE(entries.empty()) << sums_path << " lists no file";

  std::set<std::string> listed;
  std::vector<std::string> paths;
  for (const auto& e : entries) {
    EXPECT_TRUE(listed.insert(e.name).second) << sums_path << " lists " << e.name << " twice";
    const std::string path = dir + "/" + e.name;
    if (!std::filesystem::is_regular_file(path)) {
      ADD_FAILURE() << path << " is listed in " << sums_path << " but does not exist";
      continue;
    }
    paths.push_back(path);
  }
  const auto actual = testing::sha256_files(paths);
  for (const auto& e : entries) {
    const auto it = actual.find(dir + "/" + e.name);
    if (it == actual.end()) continue;  // reported above
    EXPECT_EQ(it->second, e.sha256) << dir << "/" << e.name << ": sha256 " << it->second
                                    << ", but " << sums_path << " records " << e.sha256;
  }
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    const std::string name = f.path().filename().string();
    if (name == "README.md" || name == "SHA256SUMS") continue;
    EXPECT_TRUE(listed.count(name) == 1 && f.is_regular_file())
        << f.path().string() << " is not listed in " << sums_path
        << " (every data file must be, with its provenance in tests/data/PROVENANCE.md)";
  }
}

INSTANTIATE_TEST_SUITE_P(Dirs, DataIntegrityTest, ::testing::Values("golden", "reference"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           return std::string(p.param);
                         });

}  // namespace
}  // namespace kiln
