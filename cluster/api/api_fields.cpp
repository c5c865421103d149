// Field readers of the OpenAI request parser (api_fields.h) and the UTF-8 repair every body
// writer uses (api.h: to_valid_utf8).
#include "cluster/api/api_fields.h"

#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace kiln::serve {
namespace {

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the well-formed UTF-8 character at s[i] (> 0), or minus the length of the maximal
// invalid subpart starting there (Unicode's "substitution of maximal subparts").
int utf8_step(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  int need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // ≤ U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + static_cast<size_t>(k) >= s.size()) return -k;
    const auto d = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if (d < lo || d > hi) return -k;
    lo = 0x80;
    hi = 0xBF;
  }
  return need + 1;
}

}  // namespace

std::string to_valid_utf8(std::string_view s) {
  if (!api_fields::first_invalid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const int step = utf8_step(s, i);
    if (step > 0) {
      out.append(s.substr(i, static_cast<size_t>(step)));
      i += static_cast<size_t>(step);
    } else {
      out += "\xEF\xBF\xBD";
      i += static_cast<size_t>(-step);
    }
  }
  return out;
}

namespace api_fields {

std::optional<size_t> first_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int step = utf8_step(s, i);
    if (step < 0) return i;
    i += static_cast<size_t>(step);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Error messages

// A user-supplied string quoted in a message: at most 64 bytes, always valid UTF-8.
std::string quote(std::string_view s) {
  if (s.size() <= 64) return fmt::format("\"{}\"", to_valid_utf8(s));
  return fmt::format("\"{}...\"", to_valid_utf8(s.substr(0, 64)));
}

std::string number_text(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), d);
  return std::string(buf, r.ptr);
}

std::string kind_text(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

// The value as the message shows it: numbers and booleans literally, strings quoted.
std::string value_text(const json::value& v) {
  switch (v.kind()) {
    case json::kind::bool_:
      return v.get_bool() ? "true" : "false";
    case json::kind::int64:
      return std::to_string(v.get_int64());
    case json::kind::uint64:
      return std::to_string(v.get_uint64());
    case json::kind::double_:
      return number_text(v.get_double());
    case json::kind::string:
      return quote(v.get_string());
    default:
      return kind_text(v);
  }
}

ApiError invalid(std::string_view param, const std::string& reason) {
  return bad_request(fmt::format("'{}' {}", param, reason), std::string(param));
}

ApiError wrong_type(std::string_view param, std::string_view expected, const json::value& v) {
  return invalid(param, "must be " + std::string(expected) + ", got " + kind_text(v));
}

// ---------------------------------------------------------------------------------------------
// Typed field readers. A null or absent field is "not given": the output is left untouched.

const json::value* get(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && !v->is_null() ? v : nullptr;
}

bool as_double(const json::value& v, double* out) {
  if (v.is_int64()) {
    *out = static_cast<double>(v.get_int64());
  } else if (v.is_uint64()) {
    *out = static_cast<double>(v.get_uint64());
  } else if (v.is_double()) {
    *out = v.get_double();
  } else {
    return false;
  }
  return true;
}

// An integral JSON number (2.0 counts, 1.5 does not). Values beyond int64 saturate, so every
// range check below rejects them.
bool as_int64(const json::value& v, int64_t* out) {
  if (v.is_int64()) {
    *out = v.get_int64();
  } else if (v.is_uint64()) {
    *out = std::numeric_limits<int64_t>::max();  // the parser uses uint64 only above int64
  } else if (v.is_double()) {
    const double d = v.get_double();
    if (!std::isfinite(d) || d != std::floor(d)) return false;
    if (d >= 0x1p63) {
      *out = std::numeric_limits<int64_t>::max();
    } else if (d < -0x1p63) {
      *out = std::numeric_limits<int64_t>::min();
    } else {
      *out = static_cast<int64_t>(d);
    }
  } else {
    return false;
  }
  return true;
}

std::string int_range_text(std::string_view what, int64_t lo, int64_t hi) {
  if (hi == std::numeric_limits<int64_t>::max())
    return std::string(what) + " >= " + std::to_string(lo);
  return std::string(what) + " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// `what` names the kind of integer in the range message ("an integer", "a token id").
Err int_value(const json::value& v, std::string_view param, int64_t lo, int64_t hi, int64_t* out,
              std::string_view what = "an integer") {
  int64_t i = 0;
  if (!as_int64(v, &i)) {
    const std::string got = v.is_double() ? value_text(v) : kind_text(v);
    return invalid(param, "must be an integer, got " + got);
  }
  if (i < lo || i > hi)
    return invalid(param, "must be " + int_range_text(what, lo, hi) + ", got " + value_text(v));
  *out = i;
  return {};
}

Err read_int(const json::object& o, std::string_view key, int64_t lo, int64_t hi,
             std::optional<int64_t>* out) {
  const json::value* v = get(o, key);
  if (v == nullptr) return {};
  int64_t i = 0;
  if (auto e = int_value(*v, key, lo, hi, &i)) return e;
  *out = i;
  return {};
}

Err read_float(const json::object& o, std::string_view key, Bounds b, float* out) {
  const json::value* v = get(o, key);
  if (v == nullptr) return {};
  double d = 0;
  if (!as_double(*v, &d)) return wrong_type(key, "a number", *v);
  if (!std::isfinite(d) || d < b.lo || (b.lo_open && d == b.lo) || d > b.hi) {
    const std::string range =
        std::string(b.lo_open ? "(" : "[") + number_text(b.lo) + ", " + number_text(b.hi) + "]";
    return invalid(key, "must be a finite number in " + range + ", got " + value_text(*v));
  }
  *out = static_cast<float>(d);
  return {};
}

Err read_bool(const json::object& o, std::string_view key, bool* out, std::string_view param) {
  const json::value* v = get(o, key);
  if (v == nullptr) return {};
  if (!v->is_bool()) return wrong_type(param.empty() ? key : param, "a boolean", *v);
  *out = v->get_bool();
  return {};
}

// Text from the client: valid UTF-8 (the parser checks too) without NUL bytes.
Err check_text(std::string_view s, std::string_view param) {
  if (auto at = first_invalid_utf8(s)) {
    return invalid(param, "is not valid UTF-8 (byte " + std::to_string(*at) + ")");
  }
  if (const size_t at = s.find('\0'); at != std::string_view::npos) {
    return invalid(param, "must not contain NUL characters (at byte " + std::to_string(at) + ")");
  }
  return {};
}

Err string_value(const json::value& v, std::string_view param, std::string* out) {
  if (!v.is_string()) return wrong_type(param, "a string", v);
  const std::string_view s = v.get_string();
  if (auto e = check_text(s, param)) return e;
  *out = std::string(s);
  return {};
}

Err read_string(const json::object& o, std::string_view key, std::string* out,
                std::string_view param) {
  const json::value* v = get(o, key);
  if (v == nullptr) return {};
  return string_value(*v, param.empty() ? key : param, out);
}

// Chat text must not spell a special token (that would forge turns).
Err check_specials(std::string_view s, std::string_view param, const RequestLimits& limits) {
  for (const std::string& special : limits.special_texts) {
    if (!special.empty() && s.find(special) != std::string_view::npos) {
      return invalid(param, "must not contain the special token text " + quote(special));
    }
  }
  return {};
}

int64_t max_token_id(const RequestLimits& limits) {
  return limits.vocab_size > 0 ? limits.vocab_size - 1 : std::numeric_limits<int32_t>::max();
}

Err token_id(const json::value& v, std::string_view param, const RequestLimits& limits,
             int32_t* out) {
  int64_t id = 0;
  if (auto e = int_value(v, param, 0, max_token_id(limits), &id, "a token id")) return e;
  *out = static_cast<int32_t>(id);
  return {};
}

Err token_ids(const json::value& v, std::string_view param, const RequestLimits& limits,
              std::vector<int32_t>* out) {
  if (!v.is_array()) return wrong_type(param, "an array of token ids", v);
  const json::array& a = v.get_array();
  out->reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    int32_t id = 0;
    if (auto e = token_id(a[i], std::string(param) + "[" + std::to_string(i) + "]", limits, &id)) {
      return e;
    }
    out->push_back(id);
  }
  return {};
}

std::string indexed(std::string_view base, size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

}  // namespace api_fields
}  // namespace kiln::serve
