// Shared helpers of the sub-commands.
#include <cstdio>

#include "launcher/commands.h"

namespace kiln::launcher {

int fail(const Status& status) { return fail(status.message()); }

int fail(const std::string& message) {
  std::fprintf(stderr, "kiln: error: %s\n", message.c_str());
  return 1;
}

}  // namespace kiln::launcher
