// Python-compatible JSON serialisation (see python_json.h).
#include "text/python_json.h"

#include <charconv>
#include <cmath>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

namespace kiln::text {
namespace {

// boost::json's own value-building handler, except that doubles are re-read from their text.
struct ExactHandler {
  using string_view = boost::json::string_view;
  using error_code = boost::system::error_code;
  static constexpr size_t max_object_size = boost::json::object::max_size();
  static constexpr size_t max_array_size = boost::json::array::max_size();
  static constexpr size_t max_key_size = boost::json::string::max_size();
  static constexpr size_t max_string_size = boost::json::string::max_size();

  boost::json::value_stack st;
  std::string number;  // the text of a number split across writes

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_object_begin(error_code&) { return true; }
  bool on_object_end(size_t n, error_code&) { st.push_object(n); return true; }
  bool on_array_begin(error_code&) { return true; }
  bool on_array_end(size_t n, error_code&) { st.push_array(n); return true; }
  bool on_key_part(string_view s, size_t, error_code&) { st.push_chars(s); return true; }
  bool on_key(string_view s, size_t, error_code&) { st.push_key(s); return true; }
  bool on_string_part(string_view s, size_t, error_code&) { st.push_chars(s); return true; }
  bool on_string(string_view s, size_t, error_code&) { st.push_string(s); return true; }
  bool on_number_part(string_view s, error_code&) { number.append(s.data(), s.size()); return true; }
  bool on_int64(int64_t i, string_view, error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(uint64_t u, string_view, error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double d, string_view s, error_code&) {
    number.append(s.data(), s.size());
    double exact = 0;
    const char* end = number.data() + number.size();
    const auto r = std::from_chars(number.data(), end, exact);
    if (r.ec == std::errc() && r.ptr == end) d = exact;  // out of range: keep Boost's value
    number.clear();
    st.push_double(d);
    return true;
  }
  bool on_bool(bool b, error_code&) { st.push_bool(b); return true; }
  bool on_null(error_code&) { st.push_null(); return true; }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }
};

void append_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// Python's repr(float): shortest round-trip digits, fixed notation for exponents -4..15.
void append_double(std::string& out, double d) {
  if (std::isnan(d)) { out += "NaN"; return; }
  if (std::isinf(d)) { out += d > 0 ? "Infinity" : "-Infinity"; return; }
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  const size_t e = sci.find('e');
  std::string digits;
  bool negative = false;
  for (char c : sci.substr(0, e)) {
    if (c == '-') negative = true;
    else if (c != '.') digits += c;
  }
  int exp10 = 0;
  std::from_chars(sci.data() + e + 1 + (sci[e + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exp10);
  if (negative) out += '-';
  const auto n = static_cast<int>(digits.size());
  if (exp10 >= -4 && exp10 < 16) {
    if (exp10 < 0) {
      out.append("0.").append(static_cast<size_t>(-exp10 - 1), '0').append(digits);
    } else if (exp10 + 1 >= n) {
      out.append(digits).append(static_cast<size_t>(exp10 + 1 - n), '0').append(".0");
    } else {
      out.append(digits, 0, static_cast<size_t>(exp10 + 1)).append(1, '.');
      out.append(digits, static_cast<size_t>(exp10 + 1));
    }
    return;
  }
  out.append(digits, 0, 1);
  if (n > 1) out.append(1, '.').append(digits, 1);
  out += fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
}

void append_value(std::string& out, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null: out += "null"; break;
    case boost::json::kind::bool_: out += v.get_bool() ? "true" : "false"; break;
    case boost::json::kind::int64: out += std::to_string(v.get_int64()); break;
    case boost::json::kind::uint64: out += std::to_string(v.get_uint64()); break;
    case boost::json::kind::double_: append_double(out, v.get_double()); break;
    case boost::json::kind::string: append_string(out, v.get_string()); break;
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.get_array()) {
        if (!first) out += ", ";
        first = false;
        append_value(out, item);
      }
      out += ']';
      break;
    }
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.get_object()) {
        if (!first) out += ", ";
        first = false;
        append_string(out, key);
        out += ": ";
        append_value(out, item);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string python_json_dumps(const boost::json::value& value) {
  std::string out;
  append_value(out, value);
  return out;
}

boost::json::value parse_json_exact(std::string_view text, boost::system::error_code& ec,
                                    size_t* consumed) {
  boost::json::basic_parser<ExactHandler> parser{boost::json::parse_options{}};
  parser.handler().st.reset();
  const size_t n = parser.write_some(false, text.data(), text.size(), ec);
  if (consumed != nullptr) *consumed = n;
  if (!ec && n < text.size()) ec = boost::json::error::extra_data;
  if (ec) return nullptr;
  return parser.handler().st.release();
}

StatusOr<std::string> python_json_reformat(std::string_view json_text) {
  boost::system::error_code ec;
  const boost::json::value v = parse_json_exact(json_text, ec);
  if (ec) return invalid_argument("invalid JSON: {}", ec.message());
  return python_json_dumps(v);
}

}  // namespace kiln::text
