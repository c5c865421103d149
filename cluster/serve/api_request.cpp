// The OpenAI wire format (api.h), requests: bodies parsed with Boost.JSON and validated field by
// field; every error names its parameter.
#include "cluster/serve/api.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include <boost/json.hpp>
#include <fmt/format.h>

namespace kiln::serve {
namespace json = boost::json;
namespace {

using Err = std::optional<ApiError>;

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

std::optional<size_t> first_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int step = utf8_step(s, i);
    if (step < 0) return i;
    i += static_cast<size_t>(step);
  }
  return std::nullopt;
}

}  // namespace

std::string to_valid_utf8(std::string_view s) {
  if (!first_invalid_utf8(s)) return std::string(s);
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

namespace {

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

// A float field in [lo, hi], or (lo, hi] when lo_open.
struct Bounds {
  double lo;
  double hi;
  bool lo_open = false;
};

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

Err read_bool(const json::object& o, std::string_view key, bool* out, std::string_view param = {}) {
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
                std::string_view param = {}) {
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

// ---------------------------------------------------------------------------------------------
// Body and shared fields

std::variant<json::object, ApiError> parse_object(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return bad_request("The request body is empty; expected a JSON object.");
  }
  json::stream_parser parser;
  boost::system::error_code ec;
  const size_t consumed = parser.write(body.data(), body.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    std::string what = ec.message() + " at byte " + std::to_string(consumed);
    if (auto at = first_invalid_utf8(body)) what = "invalid UTF-8 at byte " + std::to_string(*at);
    return bad_request("The request body is not valid JSON: " + what + ".");
  }
  json::value v = parser.release();
  if (!v.is_object()) {
    return bad_request("The request body must be a JSON object, got " + kind_text(v) + ".");
  }
  return std::move(v.get_object());
}

Err parse_model(const json::object& o, const RequestLimits& limits, std::string* model) {
  if (auto e = read_string(o, "model", model)) return e;
  if (!model->empty() && !limits.model_id.empty() && *model != limits.model_id) {
    ApiError e = not_found("The model " + quote(*model) + " does not exist; this server serves " +
                               quote(limits.model_id) + ".",
                           "model_not_found");
    e.param = "model";
    return e;
  }
  return {};
}

Err add_stop(const json::value& v, std::string_view param, const RequestLimits& limits,
             std::vector<std::string>* stop) {
  std::string s;
  if (auto e = string_value(v, param, &s)) return e;
  if (s.empty()) return invalid(param, "must not be an empty string");
  if (s.size() > static_cast<size_t>(limits.max_stop_length)) {
    return invalid(param, "must be at most " + std::to_string(limits.max_stop_length) +
                              " bytes long, got " + std::to_string(s.size()));
  }
  stop->push_back(std::move(s));
  return {};
}

Err parse_stop(const json::object& o, const RequestLimits& limits, std::vector<std::string>* stop) {
  const json::value* v = get(o, "stop");
  if (v == nullptr) return {};
  if (v->is_string()) return add_stop(*v, "stop", limits, stop);
  if (!v->is_array()) return wrong_type("stop", "a string or an array of strings", *v);
  const json::array& a = v->get_array();
  if (a.size() > static_cast<size_t>(limits.max_stop_strings)) {
    return invalid("stop", "must have at most " + std::to_string(limits.max_stop_strings) +
                               " strings, got " + std::to_string(a.size()));
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (auto e = add_stop(a[i], indexed("stop", i), limits, stop)) return e;
  }
  return {};
}

// Keys are decimal token ids, values biases in [-100, 100]; a repeated id keeps its last bias.
Err parse_logit_bias(const json::object& o, const RequestLimits& limits,
                     std::vector<std::pair<int32_t, float>>* out) {
  const json::value* v = get(o, "logit_bias");
  if (v == nullptr) return {};
  if (!v->is_object()) return wrong_type("logit_bias", "an object mapping token ids to biases", *v);
  for (const auto& kv : v->get_object()) {
    const std::string_view key = kv.key();
    int64_t id = -1;
    const bool digits =
        !key.empty() && key.size() <= 12 &&
        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) std::from_chars(key.data(), key.data() + key.size(), id);
    if (!digits || id > max_token_id(limits)) {
      return invalid("logit_bias", "key " + quote(key) + " is not a token id in [0, " +
                                       std::to_string(max_token_id(limits)) + "]");
    }
    double bias = 0;
    if (!as_double(kv.value(), &bias)) {
      return invalid("logit_bias", "value for token " + std::string(key) +
                                       " must be a number, got " + kind_text(kv.value()));
    }
    if (!std::isfinite(bias) || bias < -100 || bias > 100) {
      return invalid("logit_bias", "value for token " + std::string(key) +
                                       " must be in [-100, 100], got " + value_text(kv.value()));
    }
    out->emplace_back(static_cast<int32_t>(id), static_cast<float>(bias));
  }
  std::stable_sort(out->begin(), out->end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<int32_t, float>> unique;
  for (const auto& entry : *out) {
    if (!unique.empty() && unique.back().first == entry.first) {
      unique.back() = entry;
    } else {
      unique.push_back(entry);
    }
  }
  *out = std::move(unique);
  return {};
}

Err parse_seed(const json::object& o, std::optional<uint64_t>* seed) {
  const json::value* v = get(o, "seed");
  if (v == nullptr) return {};
  if (v->is_int64()) {
    *seed = static_cast<uint64_t>(v->get_int64());  // negative values wrap
  } else if (v->is_uint64()) {
    *seed = v->get_uint64();
  } else if (v->is_double() && std::isfinite(v->get_double()) &&
             v->get_double() == std::floor(v->get_double()) && v->get_double() >= -0x1p63 &&
             v->get_double() < 0x1p64) {
    const double d = v->get_double();
    *seed = d < 0 ? static_cast<uint64_t>(static_cast<int64_t>(d)) : static_cast<uint64_t>(d);
  } else {
    return invalid("seed",
                   "must be an integer, got " + (v->is_double() ? value_text(*v) : kind_text(*v)));
  }
  return {};
}

Err parse_sampling(const json::object& o, const RequestLimits& limits, SamplingOptions* s) {
  if (auto e = read_float(o, "temperature", {0, 2}, &s->temperature)) return e;
  if (auto e = read_float(o, "top_p", {0, 1, true}, &s->top_p)) return e;
  if (auto e = read_float(o, "min_p", {0, 1}, &s->min_p)) return e;
  if (auto e = read_float(o, "presence_penalty", {-2, 2}, &s->presence_penalty)) return e;
  if (auto e = read_float(o, "frequency_penalty", {-2, 2}, &s->frequency_penalty)) return e;
  if (auto e = read_float(o, "repetition_penalty", {0, 2, true}, &s->repetition_penalty)) return e;
  std::optional<int64_t> top_k;
  if (auto e = read_int(o, "top_k", -1, std::numeric_limits<int64_t>::max(), &top_k)) return e;
  if (top_k) {
    s->top_k =
        static_cast<int32_t>(std::clamp<int64_t>(*top_k, 0, std::numeric_limits<int32_t>::max()));
  }
  if (auto e = parse_logit_bias(o, limits, &s->logit_bias)) return e;
  return parse_seed(o, &s->seed);
}

int64_t max_tokens_limit(const RequestLimits& limits) {
  return limits.max_tokens > 0 ? std::min(limits.max_tokens, limits.context) : limits.context;
}

// n, best_of, max_tokens (or chat's max_completion_tokens), min_tokens, stop, stop_token_ids,
// ignore_eos.
Err parse_lengths(const json::object& o, Endpoint endpoint, const RequestLimits& limits,
                  ParsedRequest* r) {
  std::optional<int64_t> n, best_of, min_tokens;
  if (auto e = read_int(o, "n", 1, limits.max_n, &n)) return e;
  r->params.n = static_cast<int>(n.value_or(1));
  if (auto e = read_int(o, "best_of", 1, std::numeric_limits<int64_t>::max(), &best_of)) return e;
  if (best_of && *best_of != r->params.n) {
    return invalid("best_of", "must equal n (" + std::to_string(r->params.n) +
                                  ") when given; best_of > n is not supported, got " +
                                  std::to_string(*best_of));
  }
  const bool alias = endpoint == Endpoint::kChat && get(o, "max_completion_tokens") != nullptr;
  const std::string_view key = alias ? "max_completion_tokens" : "max_tokens";
  if (auto e = read_int(o, key, 1, max_tokens_limit(limits), &r->max_tokens)) return e;
  if (r->max_tokens) r->params.max_tokens = *r->max_tokens;
  if (auto e = read_int(o, "min_tokens", 0, r->max_tokens.value_or(max_tokens_limit(limits)),
                        &min_tokens)) {
    return e;
  }
  r->params.min_tokens = min_tokens.value_or(0);
  if (auto e = parse_stop(o, limits, &r->params.stop)) return e;
  if (const json::value* v = get(o, "stop_token_ids")) {
    if (auto e = token_ids(*v, "stop_token_ids", limits, &r->params.stop_token_ids)) return e;
  }
  return read_bool(o, "ignore_eos", &r->params.ignore_eos);
}

// stream, stream_options, user, response_format.
Err parse_delivery(const json::object& o, ParsedRequest* r) {
  if (auto e = read_bool(o, "stream", &r->stream)) return e;
  if (const json::value* so = get(o, "stream_options")) {
    if (!r->stream) return invalid("stream_options", "is only allowed when 'stream' is true");
    if (!so->is_object()) return wrong_type("stream_options", "an object", *so);
    if (auto e = read_bool(so->get_object(), "include_usage", &r->include_usage,
                           "stream_options.include_usage")) {
      return e;
    }
  }
  if (auto e = read_string(o, "user", &r->user)) return e;
  if (const json::value* rf = get(o, "response_format")) {
    const json::value* type = rf->is_object() ? get(rf->get_object(), "type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get_string() != "text") {
      return invalid("response_format",
                     "must be {\"type\": \"text\"}; structured output is not supported");
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Completions: prompt, logprobs, echo

Err parse_prompt(const json::object& o, const RequestLimits& limits, ParsedRequest* r) {
  const json::value* v = get(o, "prompt");
  if (v == nullptr) return invalid("prompt", "is required");
  std::string_view param = "prompt";
  std::string inner;
  if (v->is_array() && !v->get_array().empty() &&
      (v->get_array()[0].is_string() || v->get_array()[0].is_array())) {
    // One prompt wrapped in a list (["text"] or [[ids]]); several are not supported.
    if (v->get_array().size() != 1) {
      return invalid(
          "prompt", "must hold one prompt; several prompts in one request are not supported (got " +
                        std::to_string(v->get_array().size()) + ")");
    }
    v = &v->get_array()[0];
    inner = "prompt[0]";
    param = inner;
  }
  if (v->is_string()) {
    std::string text;
    if (auto e = string_value(*v, param, &text)) return e;
    if (text.empty()) return invalid(param, "must not be empty");
    r->prompt_text = std::move(text);
    return {};
  }
  if (!v->is_array()) return wrong_type(param, "a string or an array of token ids", *v);
  if (v->get_array().empty()) return invalid(param, "must not be empty");
  return token_ids(*v, param, limits, &r->prompt_ids);
}

Err parse_completion_fields(const json::object& o, const RequestLimits& limits, ParsedRequest* r) {
  if (auto e = parse_prompt(o, limits, r)) return e;
  std::optional<int64_t> logprobs;
  if (auto e = read_int(o, "logprobs", 0, limits.max_top_logprobs, &logprobs)) return e;
  r->params.logprobs = logprobs ? static_cast<int>(*logprobs) : -1;
  if (auto e = read_bool(o, "echo", &r->params.echo)) return e;
  if (const json::value* suffix = get(o, "suffix")) {
    if (!suffix->is_string() || !suffix->get_string().empty()) {
      return invalid("suffix", "is not supported");
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Chat: messages, tools, logprobs / top_logprobs

Err parse_content(const json::value& v, const std::string& param, std::string* out) {
  if (v.is_string()) return string_value(v, param, out);
  if (!v.is_array()) return wrong_type(param, "a string or an array of content parts", v);
  const json::array& parts = v.get_array();
  for (size_t j = 0; j < parts.size(); ++j) {
    const std::string p = indexed(param, j);
    if (!parts[j].is_object()) return wrong_type(p, "an object", parts[j]);
    const json::object& part = parts[j].get_object();
    const json::value* type = get(part, "type");
    if (type == nullptr || !type->is_string() || type->get_string() != "text") {
      return invalid(p + ".type",
                     "must be \"text\" (only text content is supported), got " +
                         (type != nullptr ? value_text(*type) : std::string("nothing")));
    }
    const json::value* text = get(part, "text");
    if (text == nullptr) return invalid(p + ".text", "is required");
    std::string piece;
    if (auto e = string_value(*text, p + ".text", &piece)) return e;
    *out += piece;
  }
  return {};
}

Err parse_tool_call(const json::value& v, const std::string& p, const RequestLimits& limits,
                    text::ToolCall* call) {
  if (!v.is_object()) return wrong_type(p, "an object", v);
  const json::object& o = v.get_object();
  if (auto e = read_string(o, "id", &call->id, p + ".id")) return e;
  if (const json::value* type = get(o, "type");
      type != nullptr && (!type->is_string() || type->get_string() != "function")) {
    return invalid(p + ".type", "must be \"function\", got " + value_text(*type));
  }
  const json::value* fn = get(o, "function");
  if (fn == nullptr) return invalid(p + ".function", "is required");
  if (!fn->is_object()) return wrong_type(p + ".function", "an object", *fn);
  const json::object& f = fn->get_object();
  const json::value* name = get(f, "name");
  if (name == nullptr) return invalid(p + ".function.name", "is required");
  if (auto e = string_value(*name, p + ".function.name", &call->name)) return e;
  if (call->name.empty()) return invalid(p + ".function.name", "must not be empty");
  if (auto e = check_specials(call->name, p + ".function.name", limits)) return e;
  const json::value* args = get(f, "arguments");
  if (args == nullptr) return invalid(p + ".function.arguments", "is required");
  if (args->is_object()) {  // not OpenAI's form (a string), but the template can render it
    call->arguments = json::serialize(*args);
    call->arguments_is_json = true;
  } else if (auto e = string_value(*args, p + ".function.arguments", &call->arguments)) {
    return e;
  }
  return check_specials(call->arguments, p + ".function.arguments", limits);
}

Err parse_role(const json::object& o, const std::string& p, std::string* role) {
  const json::value* v = get(o, "role");
  if (v == nullptr) return invalid(p + ".role", "is required");
  if (!v->is_string()) return wrong_type(p + ".role", "a string", *v);
  const std::string_view r = v->get_string();
  if (r == "developer") {
    *role = "system";
  } else if (r == "system" || r == "user" || r == "assistant" || r == "tool") {
    *role = std::string(r);
  } else {
    return invalid(p + ".role",
                   "must be one of system, user, assistant, tool, developer; got " + quote(r));
  }
  return {};
}

Err parse_message(const json::value& v, const std::string& p, const RequestLimits& limits,
                  text::ChatMessage* m) {
  if (!v.is_object()) return wrong_type(p, "an object", v);
  const json::object& o = v.get_object();
  if (auto e = parse_role(o, p, &m->role)) return e;
  if (auto e = read_string(o, "name", &m->name, p + ".name")) return e;
  if (auto e = check_specials(m->name, p + ".name", limits)) return e;
  if (auto e = read_string(o, "tool_call_id", &m->tool_call_id, p + ".tool_call_id")) return e;
  if (const json::value* calls = get(o, "tool_calls")) {
    if (m->role != "assistant")
      return invalid(p + ".tool_calls", "is only allowed on assistant messages");
    if (!calls->is_array()) return wrong_type(p + ".tool_calls", "an array", *calls);
    const json::array& a = calls->get_array();
    for (size_t j = 0; j < a.size(); ++j) {
      text::ToolCall call;
      if (auto e = parse_tool_call(a[j], indexed(p + ".tool_calls", j), limits, &call)) return e;
      m->tool_calls.push_back(std::move(call));
    }
  }
  const json::value* content = get(o, "content");
  if (content == nullptr) {
    if (m->role == "assistant" && !m->tool_calls.empty()) return {};
    return invalid(p + ".content",
                   "is required (it may be null only on an assistant message with tool_calls)");
  }
  if (auto e = parse_content(*content, p + ".content", &m->content)) return e;
  return check_specials(m->content, p + ".content", limits);
}

Err parse_messages(const json::object& o, const RequestLimits& limits,
                   std::vector<text::ChatMessage>* out) {
  const json::value* v = get(o, "messages");
  if (v == nullptr) return invalid("messages", "is required");
  if (!v->is_array()) return wrong_type("messages", "an array of messages", *v);
  const json::array& a = v->get_array();
  if (a.empty()) return invalid("messages", "must not be empty");
  out->resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (auto e = parse_message(a[i], indexed("messages", i), limits, &(*out)[i])) return e;
  }
  return {};
}

Err parse_tools(const json::object& o, const RequestLimits& limits, std::string* tools_json) {
  const json::value* v = get(o, "tools");
  if (v == nullptr) return {};
  if (!v->is_array()) return wrong_type("tools", "an array of tool declarations", *v);
  const json::array& a = v->get_array();
  for (size_t j = 0; j < a.size(); ++j) {
    if (!a[j].is_object()) return wrong_type(indexed("tools", j), "an object", a[j]);
  }
  if (a.empty()) return {};
  *tools_json = json::serialize(*v);
  if (auto e = check_text(*tools_json, "tools")) return e;
  return check_specials(*tools_json, "tools", limits);
}

Err parse_chat_fields(const json::object& o, const RequestLimits& limits, ParsedRequest* r) {
  if (auto e = parse_messages(o, limits, &r->messages)) return e;
  if (auto e = parse_tools(o, limits, &r->tools_json)) return e;
  bool logprobs = false;
  std::optional<int64_t> top;
  if (auto e = read_bool(o, "logprobs", &logprobs)) return e;
  if (auto e = read_int(o, "top_logprobs", 0, limits.max_top_logprobs, &top)) return e;
  if (top && !logprobs) return invalid("top_logprobs", "requires 'logprobs' to be true");
  r->params.logprobs = logprobs ? static_cast<int>(top.value_or(0)) : -1;
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests

std::variant<ParsedRequest, ApiError> parse_request(Endpoint endpoint, std::string_view body,
                                                    const RequestLimits& limits) {
  auto parsed = parse_object(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return std::move(*e);
  const json::object& o = std::get<json::object>(parsed);
  ParsedRequest r;
  r.endpoint = endpoint;
  if (auto e = parse_model(o, limits, &r.model)) return std::move(*e);
  if (endpoint == Endpoint::kCompletions) {
    if (auto e = parse_completion_fields(o, limits, &r)) return std::move(*e);
  } else {
    if (auto e = parse_chat_fields(o, limits, &r)) return std::move(*e);
  }
  if (auto e = parse_lengths(o, endpoint, limits, &r)) return std::move(*e);
  if (auto e = parse_sampling(o, limits, &r.params.sampling)) return std::move(*e);
  if (auto e = parse_delivery(o, &r)) return std::move(*e);
  return r;
}

std::variant<int64_t, ApiError> resolve_max_tokens(const ParsedRequest& request,
                                                   int64_t prompt_tokens,
                                                   const RequestLimits& limits) {
  const bool chat = request.endpoint == Endpoint::kChat;
  const std::string prompt_param = chat ? "messages" : "prompt";
  const std::string context = "This model's maximum context length is " +
                              std::to_string(limits.context) + " tokens. However, ";
  if (prompt_tokens < 1) return bad_request("The prompt is empty.", prompt_param);
  const int64_t room = limits.context - prompt_tokens;
  if (room < 1) {
    return bad_request(context + "your " + (chat ? "messages resulted in " : "prompt is ") +
                           std::to_string(prompt_tokens) +
                           " tokens, which leaves no room for the completion. Please reduce the "
                           "length of the " +
                           prompt_param + ".",
                       prompt_param, "context_length_exceeded");
  }
  int64_t max_tokens = 0;
  if (request.max_tokens) {
    max_tokens = *request.max_tokens;
    if (max_tokens > room) {
      return bad_request(context + "you requested " + std::to_string(prompt_tokens + max_tokens) +
                             " tokens (" + std::to_string(prompt_tokens) + " in the prompt, " +
                             std::to_string(max_tokens) +
                             " for the completion). Please reduce the length of the prompt or "
                             "the completion.",
                         "max_tokens", "context_length_exceeded");
    }
  } else {
    max_tokens = std::min(room, max_tokens_limit(limits));
    if (!chat) max_tokens = std::min<int64_t>(max_tokens, 16);
  }
  if (request.params.min_tokens > max_tokens) {
    return bad_request("'min_tokens' (" + std::to_string(request.params.min_tokens) +
                           ") is more than the " + std::to_string(max_tokens) +
                           " tokens the completion may have.",
                       "min_tokens");
  }
  return max_tokens;
}

// ---------------------------------------------------------------------------------------------
// /tokenize and /detokenize

std::variant<TokenizeRequest, ApiError> parse_tokenize(std::string_view body,
                                                       const RequestLimits& limits) {
  auto parsed = parse_object(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return std::move(*e);
  const json::object& o = std::get<json::object>(parsed);
  TokenizeRequest r;
  std::string model;
  if (auto e = parse_model(o, limits, &model)) return std::move(*e);
  if (auto e = read_bool(o, "add_special_tokens", &r.add_special_tokens)) return std::move(*e);
  const json::value* prompt = get(o, "prompt");
  const json::value* messages = get(o, "messages");
  if (prompt != nullptr && messages != nullptr) {
    return invalid("prompt", "and 'messages' cannot both be given");
  }
  if (prompt != nullptr) {
    std::string text;
    if (auto e = string_value(*prompt, "prompt", &text)) return std::move(*e);
    r.prompt = std::move(text);
    return r;
  }
  if (messages == nullptr) return invalid("prompt", "is required (or 'messages')");
  if (auto e = parse_messages(o, limits, &r.messages)) return std::move(*e);
  return r;
}

std::variant<std::vector<int32_t>, ApiError> parse_detokenize(std::string_view body,
                                                              const RequestLimits& limits) {
  auto parsed = parse_object(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return std::move(*e);
  const json::object& o = std::get<json::object>(parsed);
  std::string model;
  if (auto e = parse_model(o, limits, &model)) return std::move(*e);
  const json::value* v = get(o, "tokens");
  if (v == nullptr) return invalid("tokens", "is required");
  std::vector<int32_t> ids;
  if (auto e = token_ids(*v, "tokens", limits, &ids)) return std::move(*e);
  return ids;
}

}  // namespace kiln::serve
