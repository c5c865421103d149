// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (the `tojson`
// filter chat templates use under Hugging Face transformers): ", " and ": " separators, keys in
// their given order, non-ASCII characters unescaped, floats in Python repr form (1.0, 1e-05, 1e+16).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include "kernels/base/status.h"

namespace kiln::text {

// One JSON document → value, as boost::json::parse, but every double is correctly rounded from its
// text (std::from_chars), as Python's json.loads does: Boost.JSON 1.81 can land one ulp off
// (1.1e+33 → 1.1000000000000001e+33), which would change what a template prints. On an error `ec`
// is set and `consumed` (when given) is the byte offset reached.
boost::json::value parse_json_exact(std::string_view text, boost::system::error_code& ec,
                                    size_t* consumed = nullptr);

std::string python_json_dumps(const boost::json::value& value);
// Parses `json_text` first; InvalidArgument when it is not valid JSON.
StatusOr<std::string> python_json_reformat(std::string_view json_text);

}  // namespace kiln::text
