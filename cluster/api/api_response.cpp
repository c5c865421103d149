// The OpenAI wire format (api.h), responses: completion, chat, chunk, error, models and
// tokenize bodies built as json::value and serialised. Strings are made valid UTF-8 first (U+FFFD
// per maximal invalid subpart), so every body is valid JSON whatever bytes the tokenizer produced.
#include "cluster/api/api.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include <boost/json.hpp>

namespace kiln::serve {
namespace json = boost::json;
namespace {

// Response helpers

// A logprob as written: float precision (shortest digits), -inf / NaN as -9999.0 (JSON has no
// infinities; vLLM's convention).
double wire_logprob(float lp) {
  if (!std::isfinite(lp)) return -9999.0;
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), lp);
  double d = lp;
  std::from_chars(buf, r.ptr, d);
  return d;
}

json::value nullable(const std::string& s) {
  if (s.empty()) return nullptr;
  return json::value(to_valid_utf8(s));
}

json::object envelope(const ResponseMeta& meta, std::string_view object) {
  json::object o;
  o["id"] = to_valid_utf8(meta.id);
  o["object"] = object;
  o["created"] = meta.created;
  o["model"] = to_valid_utf8(meta.model);
  return o;
}

json::object usage_object(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

std::string token_text(const text::Tokenizer& tokenizer, int32_t id) {
  return to_valid_utf8(tokenizer.token_bytes(id));
}

// The completions logprobs object, built up from the echo part then the output part.
struct CompletionLogprobs {
  json::array tokens, token_logprobs, top_logprobs, text_offset;

  // Offsets start at `offset` and never pass `end` (the text may hold fewer bytes than the
  // tokens: stop strings removed). first_null: the prompt's first token has no logprob.
  void add(const std::vector<TokenLogprob>& lps, bool first_null, size_t offset, size_t end,
           const text::Tokenizer& tokenizer) {
    for (size_t i = 0; i < lps.size(); ++i) {
      const std::string& bytes = tokenizer.token_bytes(lps[i].token);
      tokens.emplace_back(to_valid_utf8(bytes));
      if (first_null && i == 0) {
        token_logprobs.emplace_back(nullptr);
        top_logprobs.emplace_back(nullptr);
      } else {
        token_logprobs.emplace_back(wire_logprob(lps[i].logprob));
        json::object top;  // two ids with the same text: the better one is kept
        for (const auto& [id, lp] : lps[i].top)
          top.emplace(token_text(tokenizer, id), wire_logprob(lp));
        top_logprobs.emplace_back(std::move(top));
      }
      text_offset.emplace_back(static_cast<int64_t>(std::min(offset, end)));
      offset += bytes.size();
    }
  }
  json::object release() {
    return {{"tokens", std::move(tokens)},
            {"token_logprobs", std::move(token_logprobs)},
            {"top_logprobs", std::move(top_logprobs)},
            {"text_offset", std::move(text_offset)}};
  }
};

json::object chat_token(const text::Tokenizer& tokenizer, int32_t id, float logprob) {
  const std::string& bytes = tokenizer.token_bytes(id);
  json::array raw;
  raw.reserve(bytes.size());
  for (char c : bytes) raw.emplace_back(static_cast<int64_t>(static_cast<unsigned char>(c)));
  return {{"token", to_valid_utf8(bytes)},
          {"logprob", wire_logprob(logprob)},
          {"bytes", std::move(raw)}};
}

json::object chat_logprobs(const std::vector<TokenLogprob>& lps, const text::Tokenizer& tokenizer) {
  json::array content;
  for (const TokenLogprob& lp : lps) {
    json::object entry = chat_token(tokenizer, lp.token, lp.logprob);
    json::array top;
    for (const auto& [id, l] : lp.top) top.emplace_back(chat_token(tokenizer, id, l));
    entry["top_logprobs"] = std::move(top);
    content.emplace_back(std::move(entry));
  }
  return {{"content", std::move(content)}};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Errors

std::string error_body(const ApiError& error) {
  json::object e{{"message", to_valid_utf8(error.message)},
                 {"type", to_valid_utf8(error.type)},
                 {"param", nullable(error.param)},
                 {"code", nullable(error.code)}};
  return json::serialize(json::object{{"error", std::move(e)}});
}

ApiError bad_request(std::string message, std::string param, std::string code) {
  return {400, "invalid_request_error", std::move(message), std::move(param), std::move(code)};
}
ApiError unauthorized() {
  return {401, "authentication_error",
          "Invalid or missing API key; send it as 'Authorization: Bearer <key>'.", "",
          "invalid_api_key"};
}
ApiError not_found(std::string message, std::string code) {
  return {404, "invalid_request_error", std::move(message), "", std::move(code)};
}
ApiError too_large(int64_t limit_bytes) {
  return {413, "invalid_request_error",
          "The request body is larger than the limit of " + std::to_string(limit_bytes) + " bytes.",
          "", ""};
}
ApiError rate_limited(std::string message) {
  return {429, "rate_limit_error", std::move(message), "", "rate_limit_exceeded"};
}
ApiError unavailable(std::string message) {
  return {503, "server_error", std::move(message), "", "unavailable"};
}

// ---------------------------------------------------------------------------------------------
// Responses

std::string completion_body(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                            const Usage& usage, bool with_logprobs,
                            const text::Tokenizer& tokenizer) {
  json::object o = envelope(meta, "text_completion");
  json::array out;
  for (const ChoiceOutput& c : choices) {
    const std::string text = c.echo_text + c.text;
    json::value logprobs = nullptr;
    if (with_logprobs) {
      CompletionLogprobs lp;
      lp.add(c.echo_logprobs, true, 0, c.echo_text.size(), tokenizer);
      lp.add(c.logprobs, false, c.echo_text.size(), text.size(), tokenizer);
      logprobs = lp.release();
    }
    out.emplace_back(json::object{{"index", c.index},
                                  {"text", to_valid_utf8(text)},
                                  {"logprobs", std::move(logprobs)},
                                  {"finish_reason", nullable(c.finish_reason)}});
  }
  o["choices"] = std::move(out);
  o["usage"] = usage_object(usage);
  return json::serialize(o);
}

std::string chat_body(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                      const Usage& usage, bool with_logprobs, const text::Tokenizer& tokenizer) {
  json::object o = envelope(meta, "chat.completion");
  json::array out;
  for (const ChoiceOutput& c : choices) {
    json::value logprobs = nullptr;
    if (with_logprobs) logprobs = chat_logprobs(c.logprobs, tokenizer);
    out.emplace_back(json::object{
        {"index", c.index},
        {"message", json::object{{"role", "assistant"}, {"content", to_valid_utf8(c.text)}}},
        {"logprobs", std::move(logprobs)},
        {"finish_reason", nullable(c.finish_reason)}});
  }
  o["choices"] = std::move(out);
  o["usage"] = usage_object(usage);
  return json::serialize(o);
}

std::string completion_chunk(const ResponseMeta& meta, const Event& delta, bool with_logprobs,
                             const text::Tokenizer& tokenizer) {
  json::object o = envelope(meta, "text_completion");
  json::value logprobs = nullptr;
  if (with_logprobs && !delta.logprobs.empty()) {
    CompletionLogprobs lp;
    lp.add(delta.logprobs, delta.is_echo, 0, delta.text.size(), tokenizer);
    logprobs = lp.release();
  }
  json::value finish = nullptr;
  if (delta.finish_reason) finish = nullable(*delta.finish_reason);
  o["choices"] = json::array{json::object{{"index", delta.index},
                                          {"text", to_valid_utf8(delta.text)},
                                          {"logprobs", std::move(logprobs)},
                                          {"finish_reason", std::move(finish)}}};
  return json::serialize(o);
}

std::string chat_chunk(const ResponseMeta& meta, const Event& delta, bool first_for_choice,
                       bool with_logprobs, const text::Tokenizer& tokenizer) {
  json::object o = envelope(meta, "chat.completion.chunk");
  json::object d;
  if (first_for_choice) d["role"] = "assistant";
  if (first_for_choice || !delta.text.empty()) d["content"] = to_valid_utf8(delta.text);
  json::value logprobs = nullptr;
  if (with_logprobs && !delta.logprobs.empty()) logprobs = chat_logprobs(delta.logprobs, tokenizer);
  json::value finish = nullptr;
  if (delta.finish_reason) finish = nullable(*delta.finish_reason);
  o["choices"] = json::array{json::object{{"index", delta.index},
                                          {"delta", std::move(d)},
                                          {"logprobs", std::move(logprobs)},
                                          {"finish_reason", std::move(finish)}}};
  return json::serialize(o);
}

std::string usage_chunk(const ResponseMeta& meta, bool chat, const Usage& usage) {
  json::object o = envelope(meta, chat ? "chat.completion.chunk" : "text_completion");
  o["choices"] = json::array{};
  o["usage"] = usage_object(usage);
  return json::serialize(o);
}

std::string models_body(const std::string& model_id, int64_t created, int64_t max_model_len) {
  json::object model{{"id", to_valid_utf8(model_id)},
                     {"object", "model"},
                     {"created", created},
                     {"owned_by", "kiln"},
                     {"max_model_len", max_model_len}};
  return json::serialize(json::object{{"object", "list"}, {"data", json::array{std::move(model)}}});
}

std::string tokenize_body(const std::vector<int32_t>& tokens, int64_t max_model_len) {
  json::array ids;
  ids.reserve(tokens.size());
  for (int32_t t : tokens) ids.emplace_back(t);
  return json::serialize(json::object{{"tokens", std::move(ids)},
                                      {"count", static_cast<int64_t>(tokens.size())},
                                      {"max_model_len", max_model_len}});
}

std::string detokenize_body(const std::string& text) {
  return json::serialize(json::object{{"prompt", to_valid_utf8(text)}});
}

}  // namespace kiln::serve
