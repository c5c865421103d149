// Strict JSON parsing shared by the safetensors header and index readers: a first pass with
// Boost.JSON's basic_parser and a handler that tracks the keys of every open object (rejecting
// duplicates), then Boost.JSON's ordinary parse to build the value. Errors never throw.
#include "shard/json_strict.h"

#include <exception>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>

namespace kiln {
namespace {

namespace bj = boost::json;
using bj::error_code;
using bj::string_view;

// Only the duplicate-key bookkeeping matters; all other events are accepted.
class DuplicateKeyHandler {
 public:
  static constexpr size_t max_object_size = static_cast<size_t>(-1);
  static constexpr size_t max_array_size = static_cast<size_t>(-1);
  static constexpr size_t max_key_size = static_cast<size_t>(-1);
  static constexpr size_t max_string_size = static_cast<size_t>(-1);

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_array_begin(error_code&) { return true; }
  bool on_array_end(size_t, error_code&) { return true; }
  bool on_object_begin(error_code&) {
    open_.emplace_back();
    return true;
  }
  bool on_object_end(size_t, error_code&) {
    open_.pop_back();
    return true;
  }
  bool on_string_part(string_view, size_t, error_code&) { return true; }
  bool on_string(string_view, size_t, error_code&) { return true; }
  bool on_key_part(string_view s, size_t, error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(string_view s, size_t, error_code& ec) {
    key_.append(s.data(), s.size());
    if (!open_.back().insert(key_).second) {
      duplicate_ = key_;
      ec = bj::make_error_code(bj::error::syntax);
      return false;
    }
    key_.clear();
    return true;
  }
  bool on_number_part(string_view, error_code&) { return true; }
  bool on_int64(int64_t, string_view, error_code&) { return true; }
  bool on_uint64(uint64_t, string_view, error_code&) { return true; }
  bool on_double(double, string_view, error_code&) { return true; }
  bool on_bool(bool, error_code&) { return true; }
  bool on_null(error_code&) { return true; }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }

  const std::optional<std::string>& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> open_;
  std::string key_;
  std::optional<std::string> duplicate_;
};

// Length of the UTF-8 sequence starting at text[i], or 0 if it is invalid (overlong forms,
// surrogates and code points above U+10FFFF included).
size_t utf8_sequence_length(std::string_view text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (text.size() - i < n) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

size_t first_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = utf8_sequence_length(text, i);
    if (n == 0) return i;
    i += n;
  }
  return text.size();
}

StatusOr<bj::value> parse_json_strict(std::string_view text, std::string_view what) {
  if (size_t bad = first_invalid_utf8(text); bad != text.size()) {
    return invalid_argument("{} is not valid UTF-8 (byte {})", what, bad);
  }
  bj::parse_options opts;  // strict JSON: no comments, no trailing commas, UTF-8 checked
  bj::basic_parser<DuplicateKeyHandler> checker(opts);
  error_code ec;
  const size_t used = checker.write_some(false, text.data(), text.size(), ec);
  if (checker.handler().duplicate()) {
    return invalid_argument("{} has a duplicate key '{}'", what, *checker.handler().duplicate());
  }
  if (ec || used != text.size()) {
    return invalid_argument("{} is not valid JSON: {} (near byte {})", what,
                            ec ? ec.message() : std::string("extra data"), used);
  }
  try {
    bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec, {}, opts);
    if (ec) return invalid_argument("{} is not valid JSON: {}", what, ec.message());
    return v;
  } catch (const std::exception& e) {  // allocation failure is the only thing left to throw
    return internal_error("{} could not be parsed: {}", what, e.what());
  }
}

}  // namespace kiln
