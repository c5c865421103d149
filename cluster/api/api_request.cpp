// The OpenAI wire format (api.h), requests: bodies parsed with Boost.JSON and validated field by
// field; every error names its parameter.
#include "cluster/api/api.h"
#include "cluster/api/api_fields.h"
#include "text/python_json.h"

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

using namespace api_fields;

// ---------------------------------------------------------------------------------------------
// Body and shared fields

std::variant<json::object, ApiError> parse_object(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return bad_request("The request body is empty; expected a JSON object.");
  }
  boost::system::error_code ec;
  size_t consumed = 0;
  json::value v = text::parse_json_exact(body, ec, &consumed);
  if (ec) {
    std::string what = ec.message() + " at byte " + std::to_string(consumed);
    if (auto at = first_invalid_utf8(body)) what = "invalid UTF-8 at byte " + std::to_string(*at);
    return bad_request("The request body is not valid JSON: " + what + ".");
  }
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
    if (auto e = check_specials(text, param, limits)) return e;
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
    if (auto e = check_specials(text, "prompt", limits)) return std::move(*e);
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
