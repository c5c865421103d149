// Fuzz target for the OpenAI request parsers: any byte string given to parse_request (both
// endpoints), parse_tokenize and parse_detokenize must come back as a value or an ApiError whose
// envelope is valid JSON, never crash or hang; what they accept must satisfy their own bounds and
// survive resolve_max_tokens and the response writers. Uses the micro GGUF vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json.hpp>

#include "cluster/api/api.h"
#include "fuzz_vocab.h"

namespace {

const kiln::serve::RequestLimits& limits() {
  static const kiln::serve::RequestLimits* l = [] {
    auto* r = new kiln::serve::RequestLimits;
    r->context = 256;
    r->vocab_size = fuzz_tokenizer().vocab_size();
    r->model_id = "kiln-fuzz";
    r->special_texts = {"<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>"};
    return r;
  }();
  return *l;
}

void check_json(const std::string& text) {
  boost::system::error_code ec;
  boost::json::parse(text, ec);
  if (ec) std::abort();
}

void check_error(const kiln::serve::ApiError& e) {
  if (e.status != 400 && e.status != 404) std::abort();
  if (e.message.empty()) std::abort();
  check_json(kiln::serve::error_body(e));
}

void check_request(const kiln::serve::ParsedRequest& r) {
  using kiln::serve::Endpoint;
  const auto& l = limits();
  const auto& p = r.params;
  if (p.n < 1 || p.n > l.max_n || p.logprobs < -1 || p.logprobs > l.max_top_logprobs) std::abort();
  if (p.stop.size() > static_cast<size_t>(l.max_stop_strings)) std::abort();
  for (int32_t id : r.prompt_ids) {
    if (id < 0 || id >= l.vocab_size) std::abort();
  }
  if (r.endpoint == Endpoint::kCompletions && r.prompt_text.has_value() == !r.prompt_ids.empty()) {
    std::abort();
  }
  if (r.endpoint == Endpoint::kChat && r.messages.empty()) std::abort();
  const int64_t prompt = r.prompt_text ? static_cast<int64_t>(r.prompt_text->size()) : 100;
  auto max_tokens = kiln::serve::resolve_max_tokens(r, std::max<int64_t>(prompt, 1), l);
  if (auto* e = std::get_if<kiln::serve::ApiError>(&max_tokens)) check_error(*e);
  // Echo what was parsed through the writers (its text may hold any valid UTF-8).
  kiln::serve::ChoiceOutput c;
  c.text = r.prompt_text.value_or(r.messages.empty() ? "" : r.messages[0].content);
  for (int32_t id : r.prompt_ids) c.logprobs.push_back({id, -1.0f, {{id, -1.0f}}});
  const kiln::serve::ResponseMeta meta{"cmpl-f", 0, r.model};
  check_json(kiln::serve::completion_body(meta, {c}, {}, true, fuzz_tokenizer()));
  check_json(kiln::serve::chat_body(meta, {c}, {}, true, fuzz_tokenizer()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln::serve;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (Endpoint ep : {Endpoint::kCompletions, Endpoint::kChat}) {
    auto r = parse_request(ep, body, limits());
    if (auto* e = std::get_if<ApiError>(&r)) {
      check_error(*e);
    } else {
      check_request(std::get<ParsedRequest>(r));
    }
  }
  auto t = parse_tokenize(body, limits());
  if (auto* e = std::get_if<ApiError>(&t)) check_error(*e);
  auto d = parse_detokenize(body, limits());
  if (auto* e = std::get_if<ApiError>(&d)) {
    check_error(*e);
  } else {
    check_json(detokenize_body(fuzz_tokenizer().decode(std::get<std::vector<int32_t>>(d))));
  }
  return 0;
}
