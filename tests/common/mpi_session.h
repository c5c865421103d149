// MPI for tests that run in one process: ensure_mpi() initialises it on first use (a one-rank
// singleton, not while ctest lists the tests), and a gtest environment finalises it after the
// last test, so every init_world of the process finds MPI running.
#pragma once

#include <mpi.h>

#include <gtest/gtest.h>

namespace kiln::test {

class MpiEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized != 0 && finalized == 0) MPI_Finalize();
  }
};
// One per program (an inline variable), registered before main runs the tests.
inline ::testing::Environment* const kMpiEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

inline void ensure_mpi() {
  int initialized = 0;
  ASSERT_EQ(MPI_Initialized(&initialized), MPI_SUCCESS);
  if (initialized != 0) return;
  int provided = 0;
  ASSERT_EQ(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), MPI_SUCCESS);
}

}  // namespace kiln::test
