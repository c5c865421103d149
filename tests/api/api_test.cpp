// The OpenAI wire format (cluster/serve/api.h): a table of bad requests for both endpoints (status,
// type, param, code), good requests parsed into their fields, resolve_max_tokens at the context
// edge, and every response / chunk / error body parsed back with Boost.JSON.
#include "cluster/api/api.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace kiln::serve {
namespace {

namespace json = boost::json;

const std::string kData = KILN_TEST_DATA_DIR;
const std::string kFffd = "\xEF\xBF\xBD";

RequestLimits test_limits() {
  RequestLimits l;
  l.context = 4096;
  l.vocab_size = 1000;
  l.model_id = "kiln-test";
  l.special_texts = {"<|im_end|>", "<|im_user|>"};
  return l;
}

const text::Tokenizer& tokenizer() {
  static const text::Tokenizer* tok = [] {
    auto gguf = GgufFile::open(kData + "/golden/kimi-micro-f32.gguf");
    EXPECT_TRUE(gguf.ok()) << gguf.status().to_string();
    return new text::Tokenizer(std::move(text::Tokenizer::from_gguf(*gguf)).value());
  }();
  return *tok;
}

ParsedRequest parse_ok(Endpoint ep, const std::string& body,
                       const RequestLimits& l = test_limits()) {
  auto r = parse_request(ep, body, l);
  if (auto* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << "rejected: " << body << "\n  " << error_body(*e);
    return {};
  }
  return std::get<ParsedRequest>(std::move(r));
}

json::value parse_json(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << "not JSON: " << text;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Bad requests

constexpr Endpoint C = Endpoint::kCompletions;
constexpr Endpoint H = Endpoint::kChat;

struct BadCase {
  BadCase(Endpoint ep, std::string b, std::string p, int s = 400, std::string c = {})
      : endpoint(ep), body(std::move(b)), param(std::move(p)), status(s), code(std::move(c)) {}
  Endpoint endpoint;
  std::string body;
  std::string param;  // "" = JSON null
  int status;
  std::string code;  // "" = JSON null
  std::string type = "invalid_request_error";
};

// A completions body with the given extra fields, and a chat body likewise.
std::string cmp(const std::string& extra) { return R"({"prompt": "hi", )" + extra + "}"; }
std::string chat(const std::string& extra) {
  return R"({"messages": [{"role": "user", "content": "hi"}], )" + extra + "}";
}
std::string msgs(const std::string& messages) { return R"({"messages": )" + messages + "}"; }

const std::vector<BadCase>& bad_cases() {
  static const std::vector<BadCase> cases = {
      // body
      {C, R"({"prompt": "hi",)", ""},
      {C, R"({"prompt": "hi"} trailing)", ""},
      {C, R"([1, 2])", ""},
      {C, "", ""},
      {H, R"("hello")", ""},
      {H, R"({"messages": [)", ""},
      {C, std::string(R"({"prompt": ")") + "\xff\xfe" + R"("})", ""},  // rejected by the parser
      {C, R"({"prompt": "\ud800"})", ""},                              // lone surrogate
      // prompt
      {C, R"({})", "prompt"},
      {C, R"({"prompt": null})", "prompt"},
      {C, R"({"prompt": ""})", "prompt"},
      {C, R"({"prompt": []})", "prompt"},
      {C, R"({"prompt": 5})", "prompt"},
      {C, R"({"prompt": "a\u0000b"})", "prompt"},
      {C, R"({"prompt": ["a\u0000"]})", "prompt[0]"},
      {C, R"({"prompt": [1, 1000]})", "prompt[1]"},
      {C, R"({"prompt": [1, -1]})", "prompt[1]"},
      {C, R"({"prompt": [1, 2.5]})", "prompt[1]"},
      {C, R"({"prompt": ["a", "b"]})", "prompt"},
      {C, R"({"prompt": [[]]})", "prompt[0]"},
      {C, R"({"prompt": [[1, "x"]]})", "prompt[0][1]"},
      {C, R"({"prompt": [""]})", "prompt[0]"},
      // counts and lengths
      {C, cmp(R"("n": 0)"), "n"},
      {C, cmp(R"("n": 17)"), "n"},
      {C, cmp(R"("n": 1.5)"), "n"},
      {C, cmp(R"("n": "2")"), "n"},
      {C, cmp(R"("n": 1e400)"), "n"},
      {H, chat(R"("n": 0)"), "n"},
      {C, cmp(R"("n": 2, "best_of": 3)"), "best_of"},
      {C, cmp(R"("max_tokens": 0)"), "max_tokens"},
      {C, cmp(R"("max_tokens": -1)"), "max_tokens"},
      {C, cmp(R"("max_tokens": 5000)"), "max_tokens"},
      {C, cmp(R"("max_tokens": 2.5)"), "max_tokens"},
      {C, cmp(R"("max_tokens": 18446744073709551615)"), "max_tokens"},
      {H, chat(R"("max_completion_tokens": 0)"), "max_completion_tokens"},
      {H, chat(R"("max_tokens": true)"), "max_tokens"},
      {C, cmp(R"("min_tokens": -1)"), "min_tokens"},
      {C, cmp(R"("min_tokens": 10, "max_tokens": 5)"), "min_tokens"},
      // logprobs
      {C, cmp(R"("logprobs": 21)"), "logprobs"},
      {C, cmp(R"("logprobs": -1)"), "logprobs"},
      {C, cmp(R"("logprobs": true)"), "logprobs"},
      {H, chat(R"("logprobs": true, "top_logprobs": 21)"), "top_logprobs"},
      {H, chat(R"("top_logprobs": 2)"), "top_logprobs"},
      {H, chat(R"("logprobs": false, "top_logprobs": 2)"), "top_logprobs"},
      {H, chat(R"("logprobs": 1)"), "logprobs"},
      // stop
      {C, cmp(R"("stop": ["a", "b", "c", "d", "e"])"), "stop"},
      {H, chat(R"("stop": ["a", "b", "c", "d", "e"])"), "stop"},
      {C, cmp(R"("stop": "")"), "stop"},
      {C, cmp(R"("stop": ["a", ""])"), "stop[1]"},
      {C, cmp(R"("stop": ")" + std::string(257, 'x') + R"(")"), "stop"},
      {C, cmp(R"("stop": ["a", 3])"), "stop[1]"},
      {C, cmp(R"("stop": {})"), "stop"},
      {C, cmp(R"("stop": ["a\u0000"])"), "stop[0]"},
      {C, cmp(R"("stop_token_ids": [1000])"), "stop_token_ids[0]"},
      {C, cmp(R"("stop_token_ids": 5)"), "stop_token_ids"},
      // sampling
      {C, cmp(R"("temperature": -1)"), "temperature"},
      {C, cmp(R"("temperature": "hot")"), "temperature"},
      {C, cmp(R"("temperature": 3)"), "temperature"},
      {C, cmp(R"("temperature": 1e400)"), "temperature"},
      {C, cmp(R"("temperature": true)"), "temperature"},
      {H, chat(R"("temperature": 2.5)"), "temperature"},
      {C, cmp(R"("top_p": 0)"), "top_p"},
      {C, cmp(R"("top_p": 1.5)"), "top_p"},
      {C, cmp(R"("top_k": -2)"), "top_k"},
      {C, cmp(R"("top_k": 1.5)"), "top_k"},
      {C, cmp(R"("min_p": 2)"), "min_p"},
      {C, cmp(R"("presence_penalty": 3)"), "presence_penalty"},
      {C, cmp(R"("frequency_penalty": -3)"), "frequency_penalty"},
      {C, cmp(R"("repetition_penalty": 0)"), "repetition_penalty"},
      {C, cmp(R"("repetition_penalty": 2.5)"), "repetition_penalty"},
      {C, cmp(R"("seed": "x")"), "seed"},
      {C, cmp(R"("seed": 1.5)"), "seed"},
      {C, cmp(R"("seed": 1e30)"), "seed"},
      {C, cmp(R"("logit_bias": {"abc": 1})"), "logit_bias"},
      {C, cmp(R"("logit_bias": {"-1": 1})"), "logit_bias"},
      {C, cmp(R"("logit_bias": {"1000": 1})"), "logit_bias"},
      {C, cmp(R"("logit_bias": {"5": 200})"), "logit_bias"},
      {C, cmp(R"("logit_bias": {"5": "x"})"), "logit_bias"},
      {C, cmp(R"("logit_bias": [1])"), "logit_bias"},
      // flags and the rest
      {C, cmp(R"("echo": "yes")"), "echo"},
      {C, cmp(R"("stream": 1)"), "stream"},
      {C, cmp(R"("ignore_eos": "no")"), "ignore_eos"},
      {C, cmp(R"("stream_options": {"include_usage": true})"), "stream_options"},
      {H, chat(R"("stream": false, "stream_options": {"include_usage": true})"), "stream_options"},
      {C, cmp(R"("stream": true, "stream_options": 5)"), "stream_options"},
      {C, cmp(R"("stream": true, "stream_options": {"include_usage": "y"})"),
       "stream_options.include_usage"},
      {C, cmp(R"("user": 5)"), "user"},
      {C, cmp(R"("response_format": {"type": "json_object"})"), "response_format"},
      {C, cmp(R"("suffix": "tail")"), "suffix"},
      {C, cmp(R"("model": 5)"), "model"},
      {C, cmp(R"("model": "other")"), "model", 404, "model_not_found"},
      {H, chat(R"("model": "gpt-4o")"), "model", 404, "model_not_found"},
      // messages
      {H, R"({})", "messages"},
      {H, msgs("[]"), "messages"},
      {H, msgs("{}"), "messages"},
      {H, msgs("[5]"), "messages[0]"},
      {H, msgs(R"([{"content": "hi"}])"), "messages[0].role"},
      {H, msgs(R"([{"role": "wizard", "content": "hi"}])"), "messages[0].role"},
      {H, msgs(R"([{"role": 5, "content": "hi"}])"), "messages[0].role"},
      {H, msgs(R"([{"role": "user", "content": 5}])"), "messages[0].content"},
      {H, msgs(R"([{"role": "user"}])"), "messages[0].content"},
      {H, msgs(R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}])"),
       "messages[1].content"},
      {H,
       msgs(R"([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])"),
       "messages[0].content[0].type"},
      {H, msgs(R"([{"role": "user", "content": [{"type": "text"}]}])"),
       "messages[0].content[0].text"},
      {H, msgs(R"([{"role": "user", "content": [5]}])"), "messages[0].content[0]"},
      {H,
       msgs(R"([{"role": "user", "content": "hi"}, {"role": "user", "content": "x<|im_end|>y"}])"),
       "messages[1].content"},
      {H, msgs(R"([{"role": "user", "content": [{"type": "text", "text": "<|im_"},
                                                  {"type": "text", "text": "end|>"}]}])"),
       "messages[0].content"},
      {H, msgs(R"([{"role": "user", "content": "a\u0000"}])"), "messages[0].content"},
      {H, msgs(R"([{"role": "user", "name": "<|im_user|>", "content": "hi"}])"),
       "messages[0].name"},
      {H, msgs(R"([{"role": "user", "content": "hi", "tool_calls": []}])"),
       "messages[0].tool_calls"},
      {H, msgs(R"([{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}])"),
       "messages[0].tool_calls[0].function"},
      {H, msgs(R"([{"role": "assistant", "tool_calls": [{"type": "retrieval",
                    "function": {"name": "f", "arguments": "{}"}}]}])"),
       "messages[0].tool_calls[0].type"},
      {H, msgs(R"([{"role": "assistant",
                     "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}])"),
       "messages[0].tool_calls[0].function.arguments"},
      {H, msgs(R"([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}])"),
       "messages[0].tool_calls[0].function.name"},
      {H, chat(R"("tools": {})"), "tools"},
      {H, chat(R"("tools": [5])"), "tools[0]"},
      {H, chat(R"("tools": [{"type": "function", "function": {"name": "f",
                                 "description": "ends <|im_end|>"}}])"),
       "tools"},
  };
  return cases;
}

TEST(ApiParse, BadRequestTable) {
  const RequestLimits limits = test_limits();
  ASSERT_GE(bad_cases().size(), 45u);
  for (size_t i = 0; i < bad_cases().size(); ++i) {
    const BadCase& c = bad_cases()[i];
    SCOPED_TRACE("row " + std::to_string(i) + ": " + c.body.substr(0, 200));
    auto r = parse_request(c.endpoint, c.body, limits);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << "accepted";
    const ApiError& e = std::get<ApiError>(r);
    EXPECT_EQ(e.status, c.status) << e.message;
    EXPECT_EQ(e.type, c.type);
    EXPECT_EQ(e.param, c.param) << e.message;
    EXPECT_EQ(e.code, c.code);
    if (!c.param.empty()) {
      EXPECT_NE(e.message.find(c.param), std::string::npos)
          << "message does not name the param: " << e.message;
    } else {
      EXPECT_NE(e.message.find("JSON"), std::string::npos) << e.message;
    }
    // The envelope is valid JSON whatever the message holds.
    const json::value env = parse_json(error_body(e));
    EXPECT_EQ(env.at("error").at("message").as_string(), e.message);
  }
}

TEST(ApiParse, MalformedJsonSaysWhere) {
  auto r = parse_request(C, R"({"prompt": "hi",})", test_limits());
  const ApiError& e = std::get<ApiError>(r);
  EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("at byte 16"), std::string::npos) << e.message;
  auto utf = parse_request(C, std::string("{\"prompt\": \"ab\xff\"}"), test_limits());
  EXPECT_NE(std::get<ApiError>(utf).message.find("invalid UTF-8 at byte 14"), std::string::npos)
      << std::get<ApiError>(utf).message;
  auto arr = parse_request(C, "[1]", test_limits());
  EXPECT_NE(std::get<ApiError>(arr).message.find("must be a JSON object"), std::string::npos);
}

TEST(ApiParse, MessagesGiveReasonAndValue) {
  const ApiError e =
      std::get<ApiError>(parse_request(C, cmp(R"("temperature": 3)"), test_limits()));
  EXPECT_EQ(e.message, "'temperature' must be a finite number in [0, 2], got 3");
  const ApiError n = std::get<ApiError>(parse_request(C, cmp(R"("n": 17)"), test_limits()));
  EXPECT_EQ(n.message, "'n' must be an integer in [1, 16], got 17");
  const ApiError f = std::get<ApiError>(parse_request(C, cmp(R"("n": 1.5)"), test_limits()));
  EXPECT_EQ(f.message, "'n' must be an integer, got 1.5");
  const ApiError lb =
      std::get<ApiError>(parse_request(C, cmp(R"("logit_bias": {"5": 200})"), test_limits()));
  EXPECT_EQ(lb.message, "'logit_bias' value for token 5 must be in [-100, 100], got 200");
  const ApiError m =
      std::get<ApiError>(parse_request(H, chat(R"("model": "gpt-4o")"), test_limits()));
  EXPECT_NE(m.message.find("\"gpt-4o\" does not exist"), std::string::npos) << m.message;
}

TEST(ApiParse, LimitsComeFromRequestLimits) {
  RequestLimits l = test_limits();
  l.max_n = 2;
  l.max_tokens = 100;
  l.max_top_logprobs = 5;
  l.max_stop_strings = 1;
  l.max_stop_length = 3;
  EXPECT_EQ(std::get<ApiError>(parse_request(C, cmp(R"("n": 3)"), l)).param, "n");
  EXPECT_EQ(std::get<ApiError>(parse_request(C, cmp(R"("max_tokens": 101)"), l)).param,
            "max_tokens");
  EXPECT_EQ(std::get<ApiError>(parse_request(C, cmp(R"("logprobs": 6)"), l)).param, "logprobs");
  EXPECT_EQ(std::get<ApiError>(parse_request(C, cmp(R"("stop": ["a", "b"])"), l)).param, "stop");
  EXPECT_EQ(std::get<ApiError>(parse_request(C, cmp(R"("stop": "abcd")"), l)).param, "stop");
  EXPECT_EQ(
      parse_ok(C, cmp(R"("n": 2, "max_tokens": 100, "logprobs": 5, "stop": "abc")"), l).params.n,
      2);
  l.model_id.clear();  // no served id: any model name is accepted
  EXPECT_EQ(parse_ok(C, cmp(R"("model": "anything")"), l).model, "anything");
}

// ---------------------------------------------------------------------------------------------
// Good requests

TEST(ApiParse, CompletionDefaults) {
  const ParsedRequest r = parse_ok(C, R"({"prompt": "Hello"})");
  EXPECT_EQ(r.endpoint, C);
  EXPECT_EQ(r.prompt_text, "Hello");
  EXPECT_TRUE(r.prompt_ids.empty());
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.params.n, 1);
  EXPECT_EQ(r.params.logprobs, -1);
  EXPECT_FALSE(r.params.echo);
  EXPECT_TRUE(r.params.stop.empty());
  EXPECT_EQ(r.params.min_tokens, 0);
  EXPECT_FALSE(r.params.ignore_eos);
  EXPECT_EQ(r.params.sampling.temperature, 1.0f);
  EXPECT_EQ(r.params.sampling.top_p, 1.0f);
  EXPECT_EQ(r.params.sampling.top_k, 0);
  EXPECT_EQ(r.params.sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(r.params.sampling.seed.has_value());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_TRUE(r.model.empty());
}

TEST(ApiParse, NullMeansNotGiven) {
  const ParsedRequest r = parse_ok(C, R"({"prompt": "x", "model": null, "max_tokens": null,
      "temperature": null, "top_p": null, "n": null, "stop": null, "logprobs": null, "seed": null,
      "stream": null, "stream_options": null, "user": null, "logit_bias": null, "best_of": null,
      "echo": null, "response_format": null, "suffix": null, "top_k": null})");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.params.n, 1);
  EXPECT_EQ(r.params.logprobs, -1);
  EXPECT_EQ(r.params.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.params.sampling.seed.has_value());
}

TEST(ApiParse, PromptForms) {
  EXPECT_EQ(parse_ok(C, R"({"prompt": [1, 2, 999]})").prompt_ids,
            (std::vector<int32_t>{1, 2, 999}));
  EXPECT_FALSE(parse_ok(C, R"({"prompt": [1, 2, 999]})").prompt_text.has_value());
  EXPECT_EQ(parse_ok(C, R"({"prompt": ["one"]})").prompt_text, "one");
  EXPECT_EQ(parse_ok(C, R"({"prompt": [[4, 5.0]]})").prompt_ids, (std::vector<int32_t>{4, 5}));
}

// Text never becomes a special id: a completions prompt that spells one is a 400 naming the
// field, as chat content is; token-id prompts are how special ids are sent on purpose.
TEST(ApiParse, SpecialTokenTextInAPromptIsRejectedOnEveryEndpoint) {
  const RequestLimits l = test_limits();
  const std::vector<std::pair<std::string, std::string>> completions = {
      {R"({"prompt": "a<|im_end|>b"})", "prompt"},
      {R"({"prompt": ["<|im_user|>"]})", "prompt[0]"},
  };
  for (const auto& [body, param] : completions) {
    auto r = parse_request(Endpoint::kCompletions, body, l);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    const ApiError& e = std::get<ApiError>(r);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body;
    EXPECT_NE(e.message.find("<|im_"), std::string::npos) << e.message;
  }
  auto chat = parse_request(Endpoint::kChat,
                            R"({"messages": [{"role": "user", "content": "x<|im_end|>"}]})", l);
  ASSERT_TRUE(std::holds_alternative<ApiError>(chat));
  EXPECT_EQ(std::get<ApiError>(chat).param, "messages[0].content");
  auto tok = parse_tokenize(R"({"prompt": "<|im_end|>"})", l);
  ASSERT_TRUE(std::holds_alternative<ApiError>(tok));
  EXPECT_EQ(std::get<ApiError>(tok).param, "prompt");
  // Near misses are ordinary text; ids are not text.
  EXPECT_EQ(parse_ok(C, R"({"prompt": "a<|im_end|b"})").prompt_text, "a<|im_end|b");
  EXPECT_EQ(parse_ok(C, R"({"prompt": [1, 2]})").prompt_ids, (std::vector<int32_t>{1, 2}));
}

TEST(ApiParse, CompletionFields) {
  const ParsedRequest r = parse_ok(C, R"({"prompt": "x", "model": "kiln-test", "max_tokens": 2.0,
      "n": 3, "best_of": 3, "stop": "END", "temperature": 0, "top_p": 0.5, "top_k": -1,
      "min_p": 0.1, "presence_penalty": -2, "frequency_penalty": 2, "repetition_penalty": 1.2,
      "logit_bias": {"7": 100, "5": -100, "05": 3}, "seed": -1, "logprobs": 5, "echo": true,
      "stream": true, "stream_options": {"include_usage": true}, "user": "u1",
      "response_format": {"type": "text"}, "stop_token_ids": [3, 4], "ignore_eos": true,
      "min_tokens": 1, "suffix": "", "unknown": {"nested": [1]}})");
  EXPECT_EQ(r.model, "kiln-test");
  EXPECT_EQ(r.max_tokens, 2);
  EXPECT_EQ(r.params.max_tokens, 2);
  EXPECT_EQ(r.params.n, 3);
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(r.params.sampling.temperature, 0.0f);
  EXPECT_EQ(r.params.sampling.top_p, 0.5f);
  EXPECT_EQ(r.params.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(r.params.sampling.min_p, 0.1f);
  EXPECT_EQ(r.params.sampling.presence_penalty, -2.0f);
  EXPECT_EQ(r.params.sampling.frequency_penalty, 2.0f);
  EXPECT_FLOAT_EQ(r.params.sampling.repetition_penalty, 1.2f);
  // Sorted by id; "05" is token 5 again and, coming later, wins.
  const std::vector<std::pair<int32_t, float>> bias = {{5, 3.0f}, {7, 100.0f}};
  EXPECT_EQ(r.params.sampling.logit_bias, bias);
  EXPECT_EQ(r.params.sampling.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(r.params.logprobs, 5);
  EXPECT_TRUE(r.params.echo);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.user, "u1");
  EXPECT_EQ(r.params.stop_token_ids, (std::vector<int32_t>{3, 4}));
  EXPECT_TRUE(r.params.ignore_eos);
  EXPECT_EQ(r.params.min_tokens, 1);
}

TEST(ApiParse, SeedsAndTopK) {
  EXPECT_EQ(parse_ok(C, cmp(R"("seed": 18446744073709551615)")).params.sampling.seed,
            std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(parse_ok(C, cmp(R"("seed": 3.0)")).params.sampling.seed, 3u);
  EXPECT_EQ(parse_ok(C, cmp(R"("seed": -2)")).params.sampling.seed,
            std::numeric_limits<uint64_t>::max() - 1);
  EXPECT_EQ(parse_ok(C, cmp(R"("seed": 0)")).params.sampling.seed, 0u);
  EXPECT_EQ(parse_ok(C, cmp(R"("top_k": 40)")).params.sampling.top_k, 40);
  EXPECT_EQ(parse_ok(C, cmp(R"("top_k": 0)")).params.sampling.top_k, 0);
  EXPECT_EQ(parse_ok(C, cmp(R"("top_k": 1e12)")).params.sampling.top_k,
            std::numeric_limits<int32_t>::max());
  EXPECT_EQ(parse_ok(C, cmp(R"("stop": ["a", "b", "c", "d"])")).params.stop.size(), 4u);
  EXPECT_EQ(parse_ok(C, cmp(R"("stop": [])")).params.stop.size(), 0u);
  EXPECT_EQ(parse_ok(C, cmp(R"("stop": ")" + std::string(256, 'x') + "\"")).params.stop[0].size(),
            256u);
  EXPECT_EQ(parse_ok(C, cmp(R"("n": 4, "stream": true)")).params.n, 4);
  EXPECT_EQ(parse_ok(C, cmp(R"("max_tokens": 4096)")).max_tokens, 4096);
  EXPECT_EQ(parse_ok(C, cmp(R"("logprobs": 0)")).params.logprobs, 0);
}

TEST(ApiParse, ChatMessagesAndAliases) {
  const ParsedRequest r = parse_ok(H, R"({"model": "", "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hel"},
                                                 {"type": "text", "text": "lo"}]},
      {"role": "assistant", "content": null, "tool_calls": [
          {"id": "call_1", "type": "function",
           "function": {"name": "get", "arguments": "{\"a\": 1}"}},
          {"id": "call_2", "function": {"name": "put", "arguments": {"b": 2}}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "42"},
      {"role": "assistant", "content": ""}],
    "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
    "max_completion_tokens": 7, "max_tokens": 9, "logprobs": true, "top_logprobs": 3,
    "n": 2, "stream": true})");
  EXPECT_EQ(r.endpoint, H);
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "Be brief.");
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].name, "ann");
  EXPECT_EQ(r.messages[1].content, "Hello");
  EXPECT_EQ(r.messages[2].role, "assistant");
  EXPECT_EQ(r.messages[2].content, "");
  ASSERT_EQ(r.messages[2].tool_calls.size(), 2u);
  EXPECT_EQ(r.messages[2].tool_calls[0].id, "call_1");
  EXPECT_EQ(r.messages[2].tool_calls[0].name, "get");
  EXPECT_EQ(r.messages[2].tool_calls[0].arguments, "{\"a\": 1}");
  EXPECT_FALSE(r.messages[2].tool_calls[0].arguments_is_json);
  EXPECT_EQ(r.messages[2].tool_calls[1].name, "put");
  EXPECT_TRUE(r.messages[2].tool_calls[1].arguments_is_json);
  EXPECT_EQ(parse_json(r.messages[2].tool_calls[1].arguments), parse_json(R"({"b": 2})"));
  EXPECT_EQ(r.messages[3].role, "tool");
  EXPECT_EQ(r.messages[3].tool_call_id, "call_1");
  EXPECT_EQ(r.messages[3].content, "42");
  EXPECT_EQ(parse_json(r.tools_json), parse_json(R"([{"type": "function", "function":
      {"name": "get", "parameters": {"type": "object"}}}])"));
  EXPECT_EQ(r.max_tokens, 7);  // max_completion_tokens wins over max_tokens
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_EQ(r.params.n, 2);
  EXPECT_TRUE(r.stream);
}

TEST(ApiParse, ChatLogprobsForms) {
  EXPECT_EQ(parse_ok(H, chat(R"("logprobs": true)")).params.logprobs, 0);
  EXPECT_EQ(parse_ok(H, chat(R"("logprobs": false)")).params.logprobs, -1);
  EXPECT_EQ(parse_ok(H, chat(R"("logprobs": true, "top_logprobs": 20)")).params.logprobs, 20);
  EXPECT_EQ(parse_ok(H, chat(R"("logprobs": false, "top_logprobs": null)")).params.logprobs, -1);
  EXPECT_EQ(parse_ok(H, chat(R"("max_tokens": 5)")).max_tokens, 5);
  EXPECT_TRUE(parse_ok(H, chat(R"("tools": [])")).tools_json.empty());
  EXPECT_FALSE(parse_ok(H, chat(R"("echo": "ignored on chat")")).params.echo);
}

// ---------------------------------------------------------------------------------------------
// resolve_max_tokens

int64_t resolved(const ParsedRequest& r, int64_t prompt, const RequestLimits& l = test_limits()) {
  auto v = resolve_max_tokens(r, prompt, l);
  if (auto* e = std::get_if<ApiError>(&v)) {
    ADD_FAILURE() << e->message;
    return -1;
  }
  return std::get<int64_t>(v);
}

TEST(ApiResolve, Defaults) {
  const ParsedRequest c = parse_ok(C, R"({"prompt": "x"})");
  const ParsedRequest h = parse_ok(H, chat(R"("n": 1)"));
  EXPECT_EQ(resolved(c, 10), 16);
  EXPECT_EQ(resolved(c, 4090), 6);  // capped by the room left
  EXPECT_EQ(resolved(h, 100), 3996);
  RequestLimits l = test_limits();
  l.max_tokens = 1000;
  EXPECT_EQ(resolved(h, 100, l), 1000);
  EXPECT_EQ(resolved(h, 3500, l), 596);
}

TEST(ApiResolve, ExactFitAndOverByOne) {
  const ParsedRequest r = parse_ok(C, cmp(R"("max_tokens": 97)"));
  EXPECT_EQ(resolved(r, 3999), 97);
  auto over = resolve_max_tokens(r, 4000, test_limits());
  ASSERT_TRUE(std::holds_alternative<ApiError>(over));
  const ApiError& e = std::get<ApiError>(over);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(
      e.message,
      "This model's maximum context length is 4096 tokens. However, you requested 4097 tokens "
      "(4000 in the prompt, 97 for the completion). Please reduce the length of the prompt "
      "or the completion.");
}

TEST(ApiResolve, PromptAloneTooLong) {
  for (Endpoint ep : {C, H}) {
    const ParsedRequest r =
        ep == C ? parse_ok(C, R"({"prompt": "x"})") : parse_ok(H, chat(R"("n": 1)"));
    for (int64_t prompt : {4096, 5000}) {
      auto v = resolve_max_tokens(r, prompt, test_limits());
      ASSERT_TRUE(std::holds_alternative<ApiError>(v));
      const ApiError& e = std::get<ApiError>(v);
      EXPECT_EQ(e.code, "context_length_exceeded");
      EXPECT_EQ(e.param, ep == C ? "prompt" : "messages");
      EXPECT_NE(e.message.find("4096 tokens"), std::string::npos) << e.message;
      EXPECT_NE(e.message.find(std::to_string(prompt)), std::string::npos) << e.message;
    }
  }
  EXPECT_EQ(resolved(parse_ok(C, R"({"prompt": "x"})"), 4095), 1);
}

TEST(ApiResolve, MinTokensOverDefault) {
  auto v = resolve_max_tokens(parse_ok(C, cmp(R"("min_tokens": 20)")), 10, test_limits());
  ASSERT_TRUE(std::holds_alternative<ApiError>(v));
  EXPECT_EQ(std::get<ApiError>(v).param, "min_tokens");
}

// ---------------------------------------------------------------------------------------------
// Responses

const ResponseMeta kMeta{"cmpl-1", 1700000000, "kiln-test"};

TEST(ApiResponse, CompletionBody) {
  ChoiceOutput c;
  c.text = "Hello world";
  c.finish_reason = "stop";
  ChoiceOutput d;
  d.index = 1;
  d.text = "Bye";
  const json::value v = parse_json(completion_body(kMeta, {c, d}, Usage{5, 4}, false, tokenizer()));
  EXPECT_EQ(v, parse_json(R"({"id": "cmpl-1", "object": "text_completion", "created": 1700000000,
      "model": "kiln-test", "choices": [
        {"index": 0, "text": "Hello world", "logprobs": null, "finish_reason": "stop"},
        {"index": 1, "text": "Bye", "logprobs": null, "finish_reason": null}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})"));
}

TEST(ApiResponse, CompletionLogprobsWithEcho) {
  const text::Tokenizer& tok = tokenizer();
  const std::vector<int32_t> prompt = tok.encode("Hello there", false);
  const std::vector<int32_t> out = tok.encode(" friend", false);
  ASSERT_GE(prompt.size(), 2u);
  ChoiceOutput c;
  c.echo_text = tok.decode(prompt);
  c.text = tok.decode(out);
  c.finish_reason = "length";
  for (int32_t id : prompt) c.echo_logprobs.push_back({id, -1.5f, {{id, -0.25f}}});
  for (int32_t id : out) c.logprobs.push_back({id, -0.5f, {{id, -0.5f}, {prompt[0], -2.0f}}});
  const json::value v = parse_json(completion_body(kMeta, {c}, Usage{}, true, tok));
  const json::object& ch = v.at("choices").at(0).as_object();
  EXPECT_EQ(ch.at("text").as_string(), "Hello there friend");
  const json::object& lp = ch.at("logprobs").as_object();
  const size_t n = prompt.size() + out.size();
  ASSERT_EQ(lp.at("tokens").as_array().size(), n);
  ASSERT_EQ(lp.at("token_logprobs").as_array().size(), n);
  ASSERT_EQ(lp.at("top_logprobs").as_array().size(), n);
  ASSERT_EQ(lp.at("text_offset").as_array().size(), n);
  // The prompt's first token has no logprob.
  EXPECT_TRUE(lp.at("token_logprobs").at(0).is_null());
  EXPECT_TRUE(lp.at("top_logprobs").at(0).is_null());
  EXPECT_EQ(lp.at("token_logprobs").at(1).as_double(), -1.5);
  EXPECT_EQ(lp.at("token_logprobs").at(n - 1).as_double(), -0.5);
  // Tokens concatenate to the text; offsets are where each token starts.
  std::string joined;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(lp.at("text_offset").at(i).as_int64(), static_cast<int64_t>(joined.size()));
    joined += lp.at("tokens").at(i).as_string();
  }
  EXPECT_EQ(joined, "Hello there friend");
  const json::object& top = lp.at("top_logprobs").at(n - 1).as_object();
  EXPECT_EQ(top.size(), 2u);
  EXPECT_EQ(top.at(tok.token_bytes(out.back())).as_double(), -0.5);
  EXPECT_EQ(top.at(tok.token_bytes(prompt[0])).as_double(), -2.0);
}

TEST(ApiResponse, LogprobsAreShortFloatsAndMinusInfIsFinite) {
  ChoiceOutput c;
  c.text = "a";
  const int32_t a = tokenizer().encode("a", false).at(0);
  c.logprobs.push_back({a, -0.1f, {{a, -std::numeric_limits<float>::infinity()}}});
  const std::string body = completion_body(kMeta, {c}, Usage{}, true, tokenizer());
  const json::value v = parse_json(body);
  const json::object& lp = v.at("choices").at(0).at("logprobs").as_object();
  EXPECT_EQ(lp.at("token_logprobs").at(0).as_double(), -0.1);  // not -0.10000000149011612
  EXPECT_EQ(lp.at("top_logprobs").at(0).at("a").as_double(), -9999.0);
}

TEST(ApiResponse, InvalidUtf8TokensBecomeReplacementCharacters) {
  const text::Tokenizer& tok = tokenizer();
  // "é" is two bytes; its first byte alone is a byte-level token of every GPT-2 style vocabulary.
  const auto lead = tok.find_token(std::string("\xC3"));
  ASSERT_TRUE(lead.has_value());
  ChoiceOutput c;
  c.text = "x";
  c.logprobs.push_back({*lead, -1.0f, {{*lead, -1.0f}}});
  const json::value cv = parse_json(completion_body(kMeta, {c}, Usage{}, true, tok));
  EXPECT_EQ(cv.at("choices").at(0).at("logprobs").at("tokens").at(0).as_string(), kFffd);
  const json::value hv = parse_json(chat_body(kMeta, {c}, Usage{}, true, tok));
  const json::value& entry = hv.at("choices").at(0).at("logprobs").at("content").at(0);
  EXPECT_EQ(entry.at("token").as_string(), kFffd);
  EXPECT_EQ(entry.at("bytes"), parse_json("[195]"));
  EXPECT_EQ(entry.at("top_logprobs").at(0).at("bytes"), parse_json("[195]"));
  // Output text with a broken tail is repaired too (the body stays valid JSON).
  c.text = "ok\xC3";
  const json::value tv = parse_json(chat_body(kMeta, {c}, Usage{}, false, tok));
  EXPECT_EQ(tv.at("choices").at(0).at("message").at("content").as_string(), "ok" + kFffd);
}

TEST(ApiResponse, ToValidUtf8) {
  EXPECT_EQ(to_valid_utf8("plain é ✓ 😀"), "plain é ✓ 😀");
  EXPECT_EQ(to_valid_utf8("a\xFF"
                          "b"),
            "a" + kFffd + "b");
  EXPECT_EQ(to_valid_utf8("\xE2\x82"), kFffd);  // truncated: one subpart
  EXPECT_EQ(to_valid_utf8("\xE2\x82"
                          "a"),
            kFffd + "a");
  EXPECT_EQ(to_valid_utf8("\xF0\x80\x80"), kFffd + kFffd + kFffd);  // overlong lead: each byte
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // surrogate
  EXPECT_EQ(to_valid_utf8("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(to_valid_utf8("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(to_valid_utf8(""), "");
}

TEST(ApiResponse, ChatBody) {
  const text::Tokenizer& tok = tokenizer();
  const std::vector<int32_t> out = tok.encode("Hi there", false);
  ChoiceOutput c;
  c.text = "Hi there";
  c.finish_reason = "stop";
  for (int32_t id : out) c.logprobs.push_back({id, -0.5f, {{id, -0.5f}, {out[0], -3.0f}}});
  const ResponseMeta meta{"chatcmpl-9", 1700000001, "kiln-test"};
  const json::value plain = parse_json(chat_body(meta, {c}, Usage{3, 2}, false, tok));
  EXPECT_EQ(plain, parse_json(R"({"id": "chatcmpl-9", "object": "chat.completion",
      "created": 1700000001, "model": "kiln-test", "choices": [{"index": 0,
      "message": {"role": "assistant", "content": "Hi there"}, "logprobs": null,
      "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
      "total_tokens": 5}})"));
  const json::value v = parse_json(chat_body(meta, {c}, Usage{3, 2}, true, tok));
  const json::array& content = v.at("choices").at(0).at("logprobs").at("content").as_array();
  ASSERT_EQ(content.size(), out.size());
  std::string joined;
  for (size_t i = 0; i < out.size(); ++i) {
    const json::object& e = content[i].as_object();
    joined += e.at("token").as_string();
    EXPECT_EQ(e.at("logprob").as_double(), -0.5);
    const std::string& bytes = tok.token_bytes(out[i]);
    ASSERT_EQ(e.at("bytes").as_array().size(), bytes.size());
    for (size_t b = 0; b < bytes.size(); ++b) {
      EXPECT_EQ(e.at("bytes").at(b).as_int64(), static_cast<unsigned char>(bytes[b]));
    }
    const json::array& top = e.at("top_logprobs").as_array();
    ASSERT_EQ(top.size(), 2u);
    EXPECT_EQ(top[1].at("token").as_string(), tok.token_bytes(out[0]));
    EXPECT_EQ(top[1].at("logprob").as_double(), -3.0);
  }
  EXPECT_EQ(joined, "Hi there");
}

TEST(ApiResponse, CompletionChunks) {
  const text::Tokenizer& tok = tokenizer();
  Event ev;
  ev.index = 2;
  ev.text = "abc";
  EXPECT_EQ(parse_json(completion_chunk(kMeta, ev, false, tok)),
            parse_json(R"({"id": "cmpl-1", "object": "text_completion", "created": 1700000000,
                "model": "kiln-test", "choices": [{"index": 2, "text": "abc", "logprobs": null,
                "finish_reason": null}]})"));
  ev.text.clear();
  ev.finish_reason = "length";
  const json::value last = parse_json(completion_chunk(kMeta, ev, false, tok));
  EXPECT_EQ(last.at("choices").at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(last.at("choices").at(0).at("text").as_string(), "");
  // An echo delta with logprobs: the first prompt token's logprob is null.
  Event echo;
  echo.is_echo = true;
  echo.text = "Hello there";
  echo.tokens = tok.encode(echo.text, false);
  for (int32_t id : echo.tokens) echo.logprobs.push_back({id, -1.0f, {}});
  const json::value ev_json = parse_json(completion_chunk(kMeta, echo, true, tok));
  const json::value& lp = ev_json.at("choices").at(0).at("logprobs");
  EXPECT_TRUE(lp.at("token_logprobs").at(0).is_null());
  EXPECT_EQ(lp.at("token_logprobs").at(1).as_double(), -1.0);
  EXPECT_EQ(lp.at("text_offset").at(0).as_int64(), 0);
  EXPECT_EQ(lp.at("tokens").as_array().size(), echo.tokens.size());
}

TEST(ApiResponse, ChatChunks) {
  const text::Tokenizer& tok = tokenizer();
  const ResponseMeta meta{"chatcmpl-2", 5, "kiln-test"};
  Event first;
  const json::value a = parse_json(chat_chunk(meta, first, true, false, tok));
  EXPECT_EQ(a, parse_json(R"({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 5,
      "model": "kiln-test", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
      "logprobs": null, "finish_reason": null}]})"));
  Event mid;
  mid.text = "Hi";
  mid.tokens = tok.encode("Hi", false);
  for (int32_t id : mid.tokens) mid.logprobs.push_back({id, -0.25f, {{id, -0.25f}}});
  const json::value b = parse_json(chat_chunk(meta, mid, false, true, tok));
  EXPECT_EQ(b.at("choices").at(0).at("delta"), parse_json(R"({"content": "Hi"})"));
  EXPECT_EQ(b.at("choices").at(0).at("logprobs").at("content").as_array().size(),
            mid.tokens.size());
  EXPECT_EQ(b.at("choices").at(0).at("logprobs").at("content").at(0).at("logprob").as_double(),
            -0.25);
  Event done;
  done.index = 1;
  done.finish_reason = "stop";
  const json::value c = parse_json(chat_chunk(meta, done, false, true, tok));
  EXPECT_EQ(c.at("choices").at(0), parse_json(R"({"index": 1, "delta": {}, "logprobs": null,
      "finish_reason": "stop"})"));
}

TEST(ApiResponse, UsageChunk) {
  EXPECT_EQ(parse_json(usage_chunk(kMeta, true, Usage{7, 3})),
            parse_json(R"({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "kiln-test", "choices": [], "usage": {"prompt_tokens": 7,
                "completion_tokens": 3, "total_tokens": 10}})"));
  EXPECT_EQ(parse_json(usage_chunk(kMeta, false, Usage{})).at("object").as_string(),
            "text_completion");
}

TEST(ApiResponse, ErrorEnvelope) {
  EXPECT_EQ(parse_json(error_body(bad_request("broken"))),
            parse_json(R"({"error": {"message": "broken", "type": "invalid_request_error",
                "param": null, "code": null}})"));
  EXPECT_EQ(parse_json(error_body(bad_request("x", "n", "c"))).at("error"),
            parse_json(
                R"({"message": "x", "type": "invalid_request_error", "param": "n", "code": "c"})"));
  const ApiError u = unauthorized();
  EXPECT_EQ(u.status, 401);
  EXPECT_EQ(u.type, "authentication_error");
  EXPECT_EQ(u.code, "invalid_api_key");
  const ApiError nf = not_found("no route", "");
  EXPECT_EQ(nf.status, 404);
  EXPECT_TRUE(parse_json(error_body(nf)).at("error").at("code").is_null());
  const ApiError big = too_large(1024);
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(big.message.find("1024"), std::string::npos);
  const ApiError rl = rate_limited("queue full");
  EXPECT_EQ(rl.status, 429);
  EXPECT_EQ(rl.type, "rate_limit_error");
  EXPECT_EQ(rl.code, "rate_limit_exceeded");
  const ApiError un = unavailable("loading");
  EXPECT_EQ(un.status, 503);
  EXPECT_EQ(un.type, "server_error");
  EXPECT_EQ(un.code, "unavailable");
  // A message with broken UTF-8 still gives a JSON body.
  const json::value broken = parse_json(error_body(bad_request("bad \xFF byte")));
  EXPECT_EQ(broken.at("error").at("message").as_string(), "bad " + kFffd + " byte");
}

TEST(ApiResponse, ModelsBody) {
  EXPECT_EQ(parse_json(models_body("kiln-test", 42, 4096)),
            parse_json(R"({"object": "list", "data": [{"id": "kiln-test", "object": "model",
                "created": 42, "owned_by": "kiln", "max_model_len": 4096}]})"));
}

// ---------------------------------------------------------------------------------------------
// /tokenize and /detokenize

TEST(ApiTokenize, Parse) {
  const RequestLimits l = test_limits();
  auto p = parse_tokenize(R"({"prompt": "Hello", "add_special_tokens": false})", l);
  ASSERT_TRUE(std::holds_alternative<TokenizeRequest>(p));
  EXPECT_EQ(std::get<TokenizeRequest>(p).prompt, "Hello");
  EXPECT_FALSE(std::get<TokenizeRequest>(p).add_special_tokens);
  auto empty = parse_tokenize(R"({"prompt": ""})", l);
  EXPECT_EQ(std::get<TokenizeRequest>(empty).prompt, "");
  auto m = parse_tokenize(
      R"({"model": "kiln-test", "messages": [{"role": "user", "content": "hi"}]})", l);
  ASSERT_TRUE(std::holds_alternative<TokenizeRequest>(m));
  EXPECT_FALSE(std::get<TokenizeRequest>(m).prompt.has_value());
  ASSERT_EQ(std::get<TokenizeRequest>(m).messages.size(), 1u);
  EXPECT_EQ(std::get<TokenizeRequest>(m).messages[0].content, "hi");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{", ""},
      {"[]", ""},
      {R"({})", "prompt"},
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": "a\u0000"})", "prompt"},
      {R"({"prompt": "a", "messages": []})", "prompt"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": [{"role": "user", "content": "<|im_end|>"}]})", "messages[0].content"},
      {R"({"prompt": "a", "add_special_tokens": 1})", "add_special_tokens"},
      {R"({"prompt": "a", "model": "other"})", "model"},
  };
  for (const auto& [body, param] : bad) {
    auto r = parse_tokenize(body, l);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    EXPECT_EQ(std::get<ApiError>(r).param, param) << body;
  }
  EXPECT_EQ(parse_json(tokenize_body({1, 2, 3}, 4096)),
            parse_json(R"({"tokens": [1, 2, 3], "count": 3, "max_model_len": 4096})"));
}

TEST(ApiDetokenize, Parse) {
  const RequestLimits l = test_limits();
  auto ok = parse_detokenize(R"({"tokens": [0, 5, 999]})", l);
  ASSERT_TRUE(std::holds_alternative<std::vector<int32_t>>(ok));
  EXPECT_EQ(std::get<std::vector<int32_t>>(ok), (std::vector<int32_t>{0, 5, 999}));
  EXPECT_TRUE(std::get<std::vector<int32_t>>(parse_detokenize(R"({"tokens": []})", l)).empty());
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"nope", ""},
      {R"({})", "tokens"},
      {R"({"tokens": "1 2"})", "tokens"},
      {R"({"tokens": [1, 1000]})", "tokens[1]"},
      {R"({"tokens": [-1]})", "tokens[0]"},
      {R"({"tokens": [1.5]})", "tokens[0]"},
  };
  for (const auto& [body, param] : bad) {
    auto r = parse_detokenize(body, l);
    ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    EXPECT_EQ(std::get<ApiError>(r).param, param) << body;
    EXPECT_EQ(std::get<ApiError>(r).status, 400);
  }
  EXPECT_EQ(parse_json(detokenize_body("caf\xC3")).at("prompt").as_string(), "caf" + kFffd);
  EXPECT_EQ(parse_json(detokenize_body("café")).at("prompt").as_string(), "café");
}

}  // namespace
}  // namespace kiln::serve
