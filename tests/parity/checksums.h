// SHA-256 of test data files, computed by CMake's own implementation (`cmake -E sha256sum`, the
// cmake that configured the build), and the `SHA256SUMS` format of coreutils' sha256sum.
#pragma once

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "parity_util.h"
#include "tests/common/run_command.h"

namespace kiln::testing {

inline bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// The lowercase hex SHA-256 of each file, keyed by the path as given. A file that cannot be
// hashed (missing, unreadable) is absent from the result; when every file exists and some are
// still absent, that is a test failure naming the command.
inline std::map<std::string, std::string> sha256_files(const std::vector<std::string>& paths) {
  std::map<std::string, std::string> out;
  if (paths.empty()) return out;
  std::string cmd = test_util::shell_quote(KILN_CMAKE_COMMAND) + " -E sha256sum";
  for (const auto& p : paths) cmd.append(" ").append(test_util::shell_quote(p));
  const test_util::CommandResult r = test_util::run_command(cmd + " 2>/dev/null");
  if (r.code == -1) {
    ADD_FAILURE() << "cannot run " << cmd;
    return out;
  }
  const std::string& text = r.output;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t sep = line.find("  ");
    if (sep == 64 && is_sha256_hex(line.substr(0, 64))) out[line.substr(66)] = line.substr(0, 64);
  }
  if (out.size() != paths.size()) {
    bool all_exist = true;
    for (const auto& p : paths) all_exist = all_exist && std::filesystem::exists(p);
    if (all_exist) ADD_FAILURE() << cmd << " hashed " << out.size() << " of " << paths.size();
  }
  return out;
}

// One line of a SHA256SUMS file: "<64 hex>  <name>" ("<64 hex> *<name>" in binary mode).
struct SumEntry {
  std::string sha256;
  std::string name;
};

// The entries of the SHA256SUMS file at `path`; a malformed line is a test failure naming it.
inline std::vector<SumEntry> read_sha256sums(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::vector<SumEntry> entries;
  int line_no = 0;
  for (std::string line; std::getline(f, line);) {
    ++line_no;
    if (line.empty()) continue;
    const bool ok = line.size() > 66 && is_sha256_hex(line.substr(0, 64)) && line[64] == ' ' &&
                    (line[65] == ' ' || line[65] == '*') && line.find('/', 66) == std::string::npos;
    if (!ok) {
      ADD_FAILURE() << path << ":" << line_no << ": not '<sha256 hex>  <file name>': " << line;
      continue;
    }
    entries.push_back({line.substr(0, 64), line.substr(66)});
  }
  return entries;
}

}  // namespace kiln::testing
