// kiln's version string, shared by the command line and (later) the HTTP gateway.
#include "cluster/version.h"

namespace kiln {
const char* version_string() { return "0.1.0"; }
}  // namespace kiln
