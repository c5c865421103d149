// Strict JSON parsing for checkpoint headers and indexes: the text must be valid UTF-8 and one
// JSON document with no duplicate keys in any object (Boost.JSON alone keeps the last duplicate
// silently). Not part of kiln's public API.
#pragma once

#include <string_view>

#include <boost/json/value.hpp>

#include "kernels/base/status.h"

namespace kiln {

// Byte offset of the first invalid UTF-8 sequence in `text`, or text.size() if it is valid.
size_t first_invalid_utf8(std::string_view text);

// Parses `text` as described above; `what` names the document in errors ("header", ...).
// Never throws.
StatusOr<boost::json::value> parse_json_strict(std::string_view text, std::string_view what);

}  // namespace kiln
