// The vocabulary of generated demo models: byte-level BPE learned on a built-in text, Kimi special
// tokens after the BPE ranks (same relative order as the real tokenizer), written in both forms.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kernels/base/status.h"
#include "shard/gguf.h"

namespace kiln {

struct DemoVocab {
  std::string tiktoken_model;         // tiktoken.model text
  std::string tokenizer_config_json;  // tokenizer_config.json text (specials, chat template)
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;  // [BOS], <|im_end|>, [PAD]
  // Adds the tokenizer.* keys llama.cpp's converter writes.
  std::function<void(GgufWriter&)> add_to_gguf;
};

// vocab_size counts BPE ranks plus the 256 special ids that follow them (Kimi's named specials
// and reserved ids), so both tokenizer forms have exactly vocab_size ids, one per model row.
StatusOr<DemoVocab> build_demo_vocab(int64_t vocab_size);

}  // namespace kiln

namespace kiln {

struct ModelConfig;
enum class DType : uint8_t;

// config.json text with the Hub keys of Kimi-Linear (1-based layer lists).
std::string hf_config_json(const ModelConfig& c, const DemoVocab& vocab, DType dtype);
// The kimi-linear.* metadata keys llama.cpp's converter writes.
void add_gguf_metadata(GgufWriter& g, const ModelConfig& c, DType dtype);

}  // namespace kiln
