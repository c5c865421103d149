// check_vocab_fit and first_id_outside (contracts in vocab_fit.h).
#include "text/vocab_fit.h"

#include <algorithm>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "text/chat_template.h"

namespace kiln {
namespace {

// A conversation that makes render_chat emit every special token of the chat format: tool
// declarations, each role, a tool call and its result, the generation prompt.
std::string chat_format_sample() {
  text::ChatOptions options;
  options.tools_json = R"([{"type": "function", "function": {"name": "f"}}])";
  text::ChatMessage call{"assistant", "", "", "", {{"1", "f", "{}", false}}};
  return text::render_chat({{"system", "s", "", "", {}},
                            {"user", "u", "", "", {}},
                            call,
                            {"tool", "r", "", "1", {}}},
                           options);
}

Status outside(const text::Tokenizer& tokenizer, const char* role, int32_t id, int64_t vocab) {
  return invalid_argument(
      "the tokenizer's {} token '{}' has id {}, but the model has only {} token rows "
      "(vocab_size): the tokenizer does not belong to this model",
      role, tokenizer.token_bytes(id), id, vocab);
}

}  // namespace

std::string VocabFit::describe() const {
  if (ids_above == 0) {
    return fmt::format("vocab: model {} rows, tokenizer {} ids", model_vocab, tokenizer_ids);
  }
  return fmt::format(
      "vocab: model {} rows, tokenizer {} ids: the {} ids from {} up cannot be embedded or "
      "sampled and are refused in requests",
      model_vocab, tokenizer_ids, ids_above, model_vocab);
}

StatusOr<VocabFit> check_vocab_fit(const text::Tokenizer& tokenizer, int64_t model_vocab) {
  if (const std::optional<int32_t> bos = tokenizer.bos_id(); bos && *bos >= model_vocab) {
    return outside(tokenizer, "beginning-of-sequence", *bos, model_vocab);
  }
  for (int32_t id : tokenizer.eos_ids()) {
    if (id >= model_vocab) return outside(tokenizer, "end-of-generation", id, model_vocab);
  }
  for (int32_t id : tokenizer.encode(chat_format_sample(), true)) {
    if (id >= model_vocab && tokenizer.is_special(id)) {
      return outside(tokenizer, "chat-format", id, model_vocab);
    }
  }
  VocabFit fit;
  fit.model_vocab = model_vocab;
  fit.tokenizer_ids = tokenizer.vocab_size();
  fit.ids_above = std::max<int64_t>(0, fit.tokenizer_ids - model_vocab);
  return fit;
}

int64_t first_id_outside(std::span<const int32_t> ids, int64_t model_vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= model_vocab) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace kiln
