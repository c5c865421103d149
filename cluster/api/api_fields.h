// Internal to the OpenAI request parser (api_request.cpp): readers of one JSON field each, which
// check its type and range and return the ApiError naming the parameter, plus the text helpers
// their messages use. Not part of kiln's API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "cluster/api/api.h"

namespace kiln::serve::api_fields {

namespace json = boost::json;
using Err = std::optional<ApiError>;

// Offset of the first byte that is not well-formed UTF-8, if any.
std::optional<size_t> first_invalid_utf8(std::string_view s);

// Message pieces: a user string quoted (≤ 64 bytes, valid UTF-8), a value's JSON kind
// ("a string", "an array", ...) and the value itself, shortened.
std::string quote(std::string_view s);
std::string kind_text(const json::value& v);
std::string value_text(const json::value& v);
// 400 "'param' reason" on `param`; wrong_type: "must be EXPECTED, got KIND".
ApiError invalid(std::string_view param, const std::string& reason);
ApiError wrong_type(std::string_view param, std::string_view expected, const json::value& v);
// "base[i]"
std::string indexed(std::string_view base, size_t i);

// The member `key`, or null when absent or JSON null ("not given").
const json::value* get(const json::object& o, std::string_view key);
// A JSON number (integer or double) as a double.
bool as_double(const json::value& v, double* out);

// A float field in [lo, hi], or (lo, hi] when lo_open.
struct Bounds {
  double lo;
  double hi;
  bool lo_open = false;
};

// Each reader leaves *out untouched when the field is absent. param defaults to key.
Err read_int(const json::object& o, std::string_view key, int64_t lo, int64_t hi,
             std::optional<int64_t>* out);
Err read_float(const json::object& o, std::string_view key, Bounds b, float* out);
Err read_bool(const json::object& o, std::string_view key, bool* out,
              std::string_view param = {});
Err read_string(const json::object& o, std::string_view key, std::string* out,
                std::string_view param = {});
// A string value (valid UTF-8, no NUL bytes), and the same check for text already extracted.
Err string_value(const json::value& v, std::string_view param, std::string* out);
Err check_text(std::string_view s, std::string_view param);
// Chat text must not spell a special token (that would forge turns).
Err check_specials(std::string_view s, std::string_view param, const RequestLimits& limits);
// Largest valid token id, and an array of token ids each in [0, vocab).
int64_t max_token_id(const RequestLimits& limits);
Err token_ids(const json::value& v, std::string_view param, const RequestLimits& limits,
              std::vector<int32_t>* out);

}  // namespace kiln::serve::api_fields
