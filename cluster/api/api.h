// The OpenAI wire format: request bodies parsed and validated into ParsedRequest (every problem an
// ApiError naming the parameter), and response / stream-chunk / error bodies written with
// Boost.JSON. No I/O, no engine: pure functions of their arguments (serving.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cluster/engine/request.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace kiln::serve {

// An error for the client: HTTP status plus the OpenAI envelope's fields. param and code are
// written as JSON null when empty.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;
  std::string code;
};
// {"error": {"message", "type", "param", "code"}}
std::string error_body(const ApiError& error);

// Convenience constructors for the statuses of serving.md. (The 404 for a wrong "model" from
// parse_request also sets param "model".)
ApiError bad_request(std::string message, std::string param = {}, std::string code = {});
ApiError unauthorized();                                  // 401 authentication_error / invalid_api_key
ApiError not_found(std::string message, std::string code = {});   // 404 invalid_request_error
ApiError too_large(int64_t limit_bytes);                  // 413
ApiError rate_limited(std::string message);               // 429 rate_limit_error / rate_limit_exceeded
ApiError unavailable(std::string message);                // 503 server_error / unavailable

// Server-side bounds used while validating (from the topology's server section and the model).
struct RequestLimits {
  int64_t context = 4096;        // tokens per sequence (prompt + output)
  int64_t max_tokens = 0;        // largest max_tokens accepted; 0 = context
  int max_n = 16;
  int max_top_logprobs = 20;
  int max_stop_strings = 4;
  int max_stop_length = 256;
  int32_t vocab_size = 0;        // token ids (prompt arrays, logit_bias, stop_token_ids) below this
  std::string model_id;          // the served model; a different non-empty "model" → 404
  // Special-token texts (e.g. "<|im_end|>"): request text containing one is rejected with a 400
  // naming the field (messages[i].content, prompt, prompt[0], ...) on every endpoint, so text
  // never becomes a special id (no forged turns; no id the client did not ask for). Special ids
  // are sent on purpose as a token-id prompt.
  std::vector<std::string> special_texts;
};

enum class Endpoint { kCompletions, kChat };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  // completions: exactly one of prompt_text / prompt_ids is set (a one-element array of either
  // form is accepted too; several prompts in one request are rejected with 400 on "prompt").
  std::optional<std::string> prompt_text;
  std::vector<int32_t> prompt_ids;
  // chat: messages (content as a string or an array of {"type":"text","text":...} parts) and
  // optional tools (their JSON text, for the chat template).
  std::vector<text::ChatMessage> messages;
  std::string tools_json;
  // max_tokens as given; empty = the endpoint's default (completions 16, chat: the rest of the
  // context), resolved by resolve_max_tokens once the prompt length is known.
  std::optional<int64_t> max_tokens;
  GenerateParams params;         // params.max_tokens is not meaningful until resolved
  bool stream = false;
  bool include_usage = false;    // stream_options.include_usage
  std::string user;
};

// Parses and validates a request body. Wrong JSON → 400 naming the problem (with its byte
// position); wrong type or out-of-range value → 400 naming the parameter (e.g. "temperature",
// "stop[2]", "messages[1].content", "logit_bias" with the key or token id in the message);
// unknown keys are ignored. A "model" other than limits.model_id → 404 model_not_found (param
// "model"). Fields and ranges: serving.md; chat "logprobs" is a bool and "top_logprobs" an int,
// completions "logprobs" an int; "max_completion_tokens" is an alias of max_tokens for chat (and
// wins over it); "n" in [1, max_n]; stop: string or array of ≤ max_stop_strings non-empty
// strings of ≤ max_stop_length bytes; temperature finite in [0, 2]; top_p in (0, 1]; top_k -1 or
// ≥ 0; min_p in [0, 1]; penalties finite in [-2, 2]; repetition_penalty in (0, 2]; seed an
// integer (negative values wrap to uint64); max_tokens ≥ 1 and ≤ the limit; min_tokens ≥ 0 and
// ≤ max_tokens; prompt / messages not empty; strings valid UTF-8 without NUL bytes. Also: null =
// not given for every optional field; integer fields accept 2.0 but not 1.5; "best_of" must
// equal n; "stream_options" needs stream true; "response_format" only {"type": "text"}; a
// non-empty "suffix" → 400; chat "top_logprobs" needs "logprobs": true; a message's content may
// be null only on an assistant message with tool_calls; text (a completions prompt, chat
// content, name, tool calls, tools) containing a special_texts entry → 400. logit_bias comes out sorted by id (a repeated
// id keeps its last value).
std::variant<ParsedRequest, ApiError> parse_request(Endpoint endpoint, std::string_view body,
                                                    const RequestLimits& limits);

// max_tokens once the prompt is tokenized: the given value, or the default (completions 16 capped
// by the room left, chat the room left). prompt + max_tokens > context → 400 with code
// context_length_exceeded whose message gives both numbers and the context (param "max_tokens");
// a prompt that leaves no room is the same error on param "prompt" / "messages". min_tokens over
// the resolved value → 400 on "min_tokens".
std::variant<int64_t, ApiError> resolve_max_tokens(const ParsedRequest& request,
                                                   int64_t prompt_tokens,
                                                   const RequestLimits& limits);

// One choice's whole output for a non-streamed response.
struct ChoiceOutput {
  int index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;  // one per token when logprobs were asked for
  std::string finish_reason;
  // echo: the prompt's text and tokens, first; logprobs of prompt tokens (the first has none: its
  // logprob is written as null) when logprobs were asked for.
  std::string echo_text;
  std::vector<TokenLogprob> echo_logprobs;
};

struct ResponseMeta {
  std::string id;        // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;   // unix seconds
  std::string model;
};

// Non-streamed bodies. logprobs: completions form {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"}; chat form {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
// Token strings come from the tokenizer (bytes that are not valid UTF-8 are written with U+FFFD
// in "token" and exactly in "bytes"). text_offset: byte offsets into the returned text (echo
// text first); a "top_logprobs" dict keeps the better of two ids with the same string. Logprobs
// of -inf are written as -9999.0 (JSON has no infinities).
std::string completion_body(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                            const Usage& usage, bool with_logprobs,
                            const text::Tokenizer& tokenizer);
std::string chat_body(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                      const Usage& usage, bool with_logprobs, const text::Tokenizer& tokenizer);

// Streamed chunks: the JSON of one "data:" event (no framing). A chat stream's first chunk for a
// choice carries delta {"role": "assistant", "content": ""} (first_for_choice); finish_reason is
// null until the choice's last chunk. A chat delta without text (and not the first) is {}.
// "logprobs" is null in a chunk whose delta carries no logprob entries; a completions chunk's
// text_offset counts from the start of that chunk's text (the function sees one delta only).
// An echo delta (is_echo) writes its first token's logprob as null.
// usage_chunk: empty "choices" and the "usage" object.
std::string completion_chunk(const ResponseMeta& meta, const Event& delta, bool with_logprobs,
                             const text::Tokenizer& tokenizer);
std::string chat_chunk(const ResponseMeta& meta, const Event& delta, bool first_for_choice,
                       bool with_logprobs, const text::Tokenizer& tokenizer);
std::string usage_chunk(const ResponseMeta& meta, bool chat, const Usage& usage);

// GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "created", "owned_by":
// "kiln", "max_model_len"}]}
std::string models_body(const std::string& model_id, int64_t created, int64_t max_model_len);

// POST /tokenize {"prompt": string, "add_special_tokens"?: bool} or {"messages": [...]} →
// {"tokens": [...], "count": n, "max_model_len": L}; POST /detokenize {"tokens": [...]} →
// {"prompt": text}. Parsing returns the text or ids to work on.
// "prompt" and "messages" together → 400; neither → 400 on "prompt". A wrong "model" → 404.
// Special-token text in "prompt" or a message → 400, as for generation.
struct TokenizeRequest {
  std::optional<std::string> prompt;
  std::vector<text::ChatMessage> messages;  // used when prompt is empty
  bool add_special_tokens = true;           // "add_special_tokens" as given (default true)
};
std::variant<TokenizeRequest, ApiError> parse_tokenize(std::string_view body,
                                                       const RequestLimits& limits);
std::string tokenize_body(const std::vector<int32_t>& tokens, int64_t max_model_len);
std::variant<std::vector<int32_t>, ApiError> parse_detokenize(std::string_view body,
                                                              const RequestLimits& limits);
std::string detokenize_body(const std::string& text);  // invalid UTF-8 → U+FFFD

// `s` with every maximal invalid UTF-8 subpart replaced by U+FFFD (unchanged when valid). Every
// string the body writers above emit goes through it, so their output is always valid JSON.
std::string to_valid_utf8(std::string_view s);

}  // namespace kiln::serve
