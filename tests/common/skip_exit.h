// How a gtest program tells ctest that its tests were skipped: ctest reads only the exit status
// (SKIP_RETURN_CODE 77, set for every suite by kiln_skip_rule in tests/CMakeLists.txt). Matching
// the output for "[  SKIPPED ]" instead would report a run as skipped whatever its exit status, so
// a failure printed next to a skip (or a sanitizer report at exit) would vanish.
#pragma once

#include <cstdio>

#include <gtest/gtest.h>

namespace kiln::test {

inline constexpr int kSkipExitCode = 77;

// The exit status for RUN_ALL_TESTS()'s `result`: 77 when every test that ran was skipped and none
// failed; 1 when some were skipped beside passing ones (ctest would show the run as passed, so
// such tests must be registered as runs of their own, e.g. by --gtest_filter); else `result`.
// A failing run keeps its failure status: skips never hide it.
inline int skip_aware_exit_status(int result) {
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (result != 0 || unit.skipped_test_count() == 0) return result;
  if (unit.successful_test_count() == 0) return kSkipExitCode;
  std::fprintf(stderr,
               "kiln: %d test(s) skipped in a run where %d passed: ctest would report them as "
               "passed; register them as a run of their own\n",
               unit.skipped_test_count(), unit.successful_test_count());
  return 1;
}

}  // namespace kiln::test
