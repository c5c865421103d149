// The demo vocabulary: BPE learned on the built-in text; when the text runs out of pairs before
// the requested size (large presets), further ranks are concatenations of two learned tokens,
// which keeps every rank a valid merge of two lower ranks in both the tiktoken and GGUF forms.
#include "tools/make_model/make_model_vocab.h"

#include <unordered_set>

#include "tools/make_model/bpe_trainer.h"
#include "tools/make_model/vocab_writer.h"

namespace kiln {

namespace {

constexpr int32_t kKimiSpecialIds = 256;

// A Kimi-format template whose default system turn is the model card's example prompt.
constexpr const char* kDemoChatTemplate =
    "{%- for message in messages -%}"
    "{%- if loop.first and messages[0]['role'] != 'system' -%}"
    "{{- '<|im_system|>system<|im_middle|>You are a helpful assistant provided by Moonshot-AI.<|im_end|>' -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{- '<|im_system|>system<|im_middle|>' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '<|im_user|>user<|im_middle|>' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '<|im_assistant|>assistant<|im_middle|>' -}}"
    "{%- else -%}{{- '<|im_system|>' + message['role'] + '<|im_middle|>' -}}{%- endif -%}"
    "{{- message['content'] -}}{{- '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_assistant|>assistant<|im_middle|>' -}}{%- endif -%}";

void fill_with_pairs(text::TrainedVocab& v, int32_t n_ranks) {
  std::unordered_set<std::string> seen(v.ranks.begin(), v.ranks.end());
  const int32_t learned = v.n_ranks();
  for (int32_t i = 256; i < learned && v.n_ranks() < n_ranks; ++i) {
    for (int32_t j = 256; j < learned && v.n_ranks() < n_ranks; ++j) {
      std::string bytes = v.ranks[i] + v.ranks[j];
      if (!seen.insert(bytes).second) continue;
      v.ranks.push_back(std::move(bytes));
      v.merges.emplace_back(i, j);
    }
  }
}

}  // namespace

StatusOr<DemoVocab> build_demo_vocab(int64_t vocab_size) {
  if (vocab_size < 512 || vocab_size > (1 << 22)) {
    return invalid_argument("vocab_size {} is outside [512, 4194304] for a generated model", vocab_size);
  }
  // Kimi's HF tokenizer always has 256 special ids after the ranks (named or reserved), so
  // vocab_size = ranks + 256 makes the tokenizer's ids exactly the model's rows in both layouts.
  const int32_t n_ranks = static_cast<int32_t>(vocab_size) - kKimiSpecialIds;
  text::TrainedVocab v = text::train_bpe(text::builtin_training_text(), n_ranks - 256,
                                         text::PreTokenizer::kKimiK2);
  fill_with_pairs(v, n_ranks);
  if (v.n_ranks() != n_ranks) {
    return internal_error("demo vocabulary has {} ranks, wanted {}", v.n_ranks(), n_ranks);
  }
  KILN_ASSIGN_OR_RETURN(text::SpecialTokens specials,
                        text::kimi_special_tokens(n_ranks, static_cast<int32_t>(vocab_size)));
  DemoVocab out;
  const std::optional<std::string> tmpl = std::string(kDemoChatTemplate);
  out.tiktoken_model = text::tiktoken_model_text(v);
  out.tokenizer_config_json = text::tokenizer_config_json(v, specials, tmpl);
  out.bos_id = specials.bos_id;
  out.pad_id = specials.pad_id;
  // config.json's eos is the end-of-turn token, as in the released config.
  for (const text::SpecialToken& s : specials.tokens) {
    if (s.content == "<|im_end|>") out.eos_id = s.id;
  }
  out.add_to_gguf = [v = std::move(v), specials, tmpl](GgufWriter& g) {
    text::add_gguf_vocab(g, v, specials, tmpl);
  };
  return out;
}

}  // namespace kiln
