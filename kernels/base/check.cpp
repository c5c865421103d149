#include "kernels/base/check.h"

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace kiln {
namespace {
AbortHandler g_abort_handler = nullptr;
}  // namespace

void set_abort_handler(AbortHandler handler) { g_abort_handler = handler; }

void check_failed(const char* file, int line, const char* condition, const std::string& detail) {
  std::string message = fmt::format("kiln: check failed at {}:{}: {}{}{}", file, line, condition,
                                    detail.empty() ? "" : ": ", detail);
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  if (g_abort_handler != nullptr) g_abort_handler(message);
  std::abort();
}

}  // namespace kiln
