// main() of the gtest suites registered through kiln_test_suite: gtest's own, except that a run
// whose tests were all skipped exits 77 so that ctest reports it as skipped (see skip_exit.h).
#include <gtest/gtest.h>

#include "skip_exit.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return kiln::test::skip_aware_exit_status(RUN_ALL_TESTS());
}
