// For gtest programs run under mpirun: only rank 0 prints gtest's report; other ranks print
// their failures with their rank through this listener.
#pragma once

#include <cstdio>

#include <gtest/gtest.h>

namespace kiln::test {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "rank %d: %s:%d: %s\n", rank_, result.file_name(), result.line_number(),
                 result.summary());
  }

 private:
  int rank_;
};

}  // namespace kiln::test
