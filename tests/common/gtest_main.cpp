// main() of the gtest suites registered through kiln_test_suite: gtest's own, except that
//  * a run whose tests were all skipped exits 77, so that ctest reports it as skipped
//    (skip_exit.h);
//  * in a build with AddressSanitizer, a skipped test's leaks are looked for before gtest prints
//    "[  SKIPPED ]": gtest_discover_tests (CMake) reports a test whose output shows that line as
//    skipped whatever its exit status, so a leak found only at exit would read as a skip.
#include <cstdio>
#include <cstdlib>

#include <gtest/gtest.h>

#include "skip_exit.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define KILN_TEST_HAS_LSAN 1
#endif

namespace {

class LeakCheckBeforeSkip : public ::testing::EmptyTestEventListener {
 public:
  // Called before the default printer's OnTestEnd (gtest calls end events in reverse order).
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.result()->Skipped()) return;
#ifdef KILN_TEST_HAS_LSAN
    if (__lsan_do_recoverable_leak_check() != 0) {
      std::fprintf(stderr, "kiln: %s.%s skipped after leaking memory (report above)\n",
                   info.test_suite_name(), info.name());
      std::fflush(nullptr);
      std::_Exit(1);
    }
#endif
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new LeakCheckBeforeSkip);
  return kiln::test::skip_aware_exit_status(RUN_ALL_TESTS());
}
