// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (the `tojson`
// filter chat templates use under Hugging Face transformers): ", " and ": " separators, keys in
// their given order, non-ASCII characters unescaped, floats in Python repr form (1.0, 1e-05, 1e+16).
#pragma once

#include <string>
#include <string_view>

#include <boost/json/value.hpp>

#include "kernels/base/status.h"

namespace kiln::text {

std::string python_json_dumps(const boost::json::value& value);
// Parses `json_text` first; InvalidArgument when it is not valid JSON.
StatusOr<std::string> python_json_reformat(std::string_view json_text);

}  // namespace kiln::text
