// API keys for the HTTP routes: reading the key file, and the constant-time check of a request's
// Authorization header. Pure functions; no state.
#pragma once

#include <string>
#include <vector>

#include "kernels/base/status.h"

namespace kiln::serve {

// Constant-time check of an "Authorization" header value against "Bearer KEY" for each key.
// The scheme is case-insensitive and followed by one or more spaces or tabs (RFC 9110 §11.1);
// spaces or tabs after the key are ignored.
bool authorized(const std::string& header, const std::vector<std::string>& keys);

// Reads API keys, one per line (blank lines and lines starting with '#' ignored); an error names
// the file, and an empty key list is an error too.
StatusOr<std::vector<std::string>> read_api_keys(const std::string& path);

}  // namespace kiln::serve
