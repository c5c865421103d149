// Helpers for the parity tests: reading golden files, comparing logit matrices with a report
// of the first mismatch and the max/relative error (NaN and inf never pass), and making
// temporary demo models.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/common/compare.h"
#include "tests/common/run_command.h"

namespace kiln::testing {

// tests/data, as configured at build time, or $KILN_TEST_DATA_DIR when set (binaries run from a
// copy of the tree at another path, e.g. scripts/gpu-check.sh with a prebuilt bundle).
inline std::string data_path(const std::string& rel) {
  const char* dir = std::getenv("KILN_TEST_DATA_DIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : KILN_TEST_DATA_DIR) + "/" + rel;
}

// n token ids in [0, vocab) from a fixed LCG: the same for a seed on every machine.
inline std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(static_cast<int32_t>((seed >> 33) % static_cast<uint64_t>(vocab)));
  }
  return ids;
}

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

// Values of the line starting with `key ` in a golden .bin.txt (e.g. "tokens", "greedy").
inline std::vector<int32_t> read_ids_line(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + " ", 0) == 0) {
      std::istringstream in(line.substr(key.size() + 1));
      std::vector<int32_t> ids;
      int32_t v;
      while (in >> v) ids.push_back(v);
      return ids;
    }
  }
  ADD_FAILURE() << "no '" << key << "' line in " << path;
  return {};
}

struct Comparison {
  // Largest |got − want|: NaN when any element pair holds a NaN, +inf for an infinity against a
  // finite value or when the sizes differ; so `max_abs <= tol` fails on every one of those.
  double max_abs = 0.0;
  double max_rel = 0.0;  // the same, relative to max(1e-6, |want|)
  int64_t first_bad = -1;  // flat index of the first element not within tolerance (NaN, inf)
  int64_t non_finite = 0;  // elements with a NaN on either side or an infinity got, want finite
  // Rows whose argmax differs where the reference's top-1/top-2 margin > min_margin, and every
  // row with a NaN on either side (it has no argmax to agree on).
  int64_t argmax_mismatches = 0;
};

// Compares [rows][vocab] logits element by element (NaN-proof, tests/common/compare.h); argmax
// only checked where the reference's top-1/top-2 margin exceeds min_margin.
inline Comparison compare_logits(const std::vector<float>& got, const std::vector<float>& want,
                                 int64_t vocab, double tol, double min_margin) {
  Comparison c;
  EXPECT_EQ(got.size(), want.size());
  const size_t n = std::min(got.size(), want.size());
  WorstError abs_err, rel_err;
  for (size_t i = 0; i < n; ++i) {
    const auto at = static_cast<int64_t>(i);
    const double d = abs_diff(got[i], want[i]);
    abs_err.add(d, at);
    rel_err.add(d / std::max(1e-6, std::fabs(static_cast<double>(want[i]))), at);
    if (!(d <= tol) && c.first_bad < 0) c.first_bad = at;
    if (std::isnan(want[i]) || (std::isfinite(want[i]) && !std::isfinite(got[i]))) ++c.non_finite;
  }
  c.max_abs = got.size() == want.size() ? abs_err.value : INFINITY;
  c.max_rel = got.size() == want.size() ? rel_err.value : INFINITY;
  for (size_t r = 0; r < n / static_cast<size_t>(vocab); ++r) {
    const float* w = want.data() + r * vocab;
    const float* g = got.data() + r * vocab;
    const int64_t top = argmax_or_nan(w, vocab);
    const int64_t got_top = argmax_or_nan(g, vocab);
    if (top < 0 || got_top < 0) {
      ++c.argmax_mismatches;
      continue;
    }
    float second = -INFINITY;
    for (int64_t j = 0; j < vocab; ++j) {
      if (j != top && w[j] > second) second = w[j];
    }
    if (w[top] - second > min_margin && got_top != top) ++c.argmax_mismatches;
  }
  return c;
}

inline std::string describe(const Comparison& c, const std::vector<float>& got,
                            const std::vector<float>& want, int64_t vocab) {
  std::ostringstream s;
  s << "max |d| = " << c.max_abs << ", max rel = " << c.max_rel
    << ", non-finite = " << c.non_finite << ", argmax mismatches = " << c.argmax_mismatches;
  if (got.size() != want.size()) {
    s << "; sizes differ: got " << got.size() << " want " << want.size();
  }
  if (c.first_bad >= 0) {
    s << "; first over tolerance at row " << c.first_bad / vocab << " col " << c.first_bad % vocab
      << ": got " << got[c.first_bad] << " want " << want[c.first_bad];
  }
  return s.str();
}

// A scratch directory removed when the test program exits.
inline std::filesystem::path temp_dir(const std::string& name) {
  struct Cleanup {
    std::vector<std::filesystem::path> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  };
  static Cleanup cleanup;
  auto p = std::filesystem::temp_directory_path() / ("kiln-test-" + std::to_string(::getpid()) + "-" + name);
  if (std::filesystem::create_directories(p)) cleanup.dirs.push_back(p);
  return p;
}

using test_util::CommandResult;

// Runs the kiln binary with `args` through the shell (`env` is prefixed, e.g. "A=1 B=2"); the
// output is stdout + stderr.
inline CommandResult run_kiln(const std::string& args, const std::string& env = "") {
  return test_util::run_command(env + " " + std::string(KILN_BINARY) + " " + args + " 2>&1");
}

}  // namespace kiln::testing
