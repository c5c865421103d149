// KILN_CHECK: the channel for broken invariants (bugs). It prints file:line and the failed
// condition, then calls the installed abort handler (the cluster layer installs one that calls
// MPI_Abort so no peer waits forever in a collective), then std::abort().
#pragma once

#include <string>

namespace kiln {

using AbortHandler = void (*)(const std::string& message);
// Installs the handler run before aborting; not thread-safe, call once at start-up.
void set_abort_handler(AbortHandler handler);
[[noreturn]] void check_failed(const char* file, int line, const char* condition,
                               const std::string& detail);

}  // namespace kiln

#define KILN_CHECK(cond)                                             \
  do {                                                               \
    if (!(cond)) [[unlikely]] ::kiln::check_failed(__FILE__, __LINE__, #cond, {}); \
  } while (0)

#define KILN_CHECK_MSG(cond, msg)                                    \
  do {                                                               \
    if (!(cond)) [[unlikely]] ::kiln::check_failed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)
