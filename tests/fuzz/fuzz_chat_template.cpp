// Fuzz target for the chat template renderer. The input is a chat template's text, a NUL byte,
// then a chat completions request body (without a NUL, the whole input is the body): the template
// gives the default system prompt (default_system_from_template, as when a checkpoint is loaded),
// the body gives the messages and tools through parse_request (as the server does), and the
// conversation is rendered and tokenized like a chat request. Nothing may crash or hang; the
// rendering obeys the template's shape and tokenizes losslessly. Uses the micro GGUF vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json.hpp>

#include "cluster/api/api.h"
#include "fuzz_vocab.h"
#include "text/python_json.h"

namespace {

constexpr std::string_view kGenerationPrompt = "<|im_assistant|>assistant<|im_middle|>";

// No special_texts: messages holding special-token text reach the renderer too (the request
// target covers their rejection).
const kiln::serve::RequestLimits& limits() {
  static const kiln::serve::RequestLimits* l = [] {
    auto* r = new kiln::serve::RequestLimits;
    r->context = 256;
    r->vocab_size = fuzz_tokenizer().vocab_size();
    return r;
  }();
  return *l;
}

// python_json_reformat accepts valid JSON only, and its output is a fixed point.
void check_reformat(std::string_view json) {
  auto once = kiln::text::python_json_reformat(json);
  if (!once.ok()) return;
  boost::system::error_code ec;
  boost::json::parse(*once, ec);
  if (ec) std::abort();
  auto twice = kiln::text::python_json_reformat(*once);
  if (!twice.ok() || *twice != *once) std::abort();
}

void render(const kiln::serve::ParsedRequest& r, const kiln::text::ChatOptions& base) {
  kiln::text::ChatOptions options = base;
  options.tools_json = r.tools_json;
  check_reformat(r.tools_json);
  for (const auto& m : r.messages) {
    for (const auto& call : m.tool_calls) {
      if (call.arguments_is_json) check_reformat(call.arguments);
    }
  }
  options.add_generation_prompt = false;
  const std::string bare = kiln::text::render_chat(r.messages, options);
  options.add_generation_prompt = true;
  const std::string full = kiln::text::render_chat(r.messages, options);
  if (full != bare + std::string(kGenerationPrompt)) std::abort();
  if (r.messages.front().role != "system" && bare.find(options.default_system) == std::string::npos) {
    std::abort();
  }
  for (const auto& m : r.messages) {
    if (bare.find(m.content) == std::string::npos) std::abort();
  }
  if (fuzz_tokenizer().decode(fuzz_tokenizer().encode(full, true)) != full) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln::serve;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  kiln::text::ChatOptions options;
  std::string_view body = input;
  if (nul != std::string_view::npos) {
    const std::string_view tmpl = input.substr(0, nul);
    body = input.substr(nul + 1);
    if (auto d = kiln::text::default_system_from_template(tmpl)) {
      if (d->empty() || tmpl.find(*d) == std::string_view::npos) std::abort();
      options.default_system = *d;
    }
  }
  auto r = parse_request(Endpoint::kChat, body, limits());
  if (const auto* p = std::get_if<ParsedRequest>(&r)) render(*p, options);
  return 0;
}
