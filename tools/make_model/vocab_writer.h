// Writes a trained vocabulary in the two forms kiln loads: Hugging Face (tiktoken.model +
// tokenizer_config.json, as Kimi ships them) and GGUF tokenizer.* keys (as llama.cpp's converter
// writes them for Kimi). Specials follow the BPE ranks in the real tokenizer's relative order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/make_model/bpe_trainer.h"
#include "kernels/base/status.h"
#include "shard/gguf.h"

namespace kiln::text {

struct SpecialToken {
  int32_t id;
  std::string content;
};

// Every id in [n_ranks, vocab_size): Kimi's named specials at their real offsets from the first
// special id ([BOS] +0, [EOS] +1, <|im_end|> +2, ..., <|im_middle|> +17), [UNK] and [PAD] as the
// last two ids, <|reserved_token_{id}|> elsewhere.
struct SpecialTokens {
  std::vector<SpecialToken> tokens;  // sorted by id, contiguous from n_ranks
  int32_t vocab_size = 0;
  int32_t bos_id = -1;  // [BOS]
  int32_t eos_id = -1;  // [EOS] (the tokenizer's and GGUF's eos; <|im_end|> ends a turn)
  int32_t unk_id = -1;  // [UNK]
  int32_t pad_id = -1;  // [PAD]
};

// InvalidArgument when vocab_size leaves fewer than 20 ids after the ranks.
StatusOr<SpecialTokens> kimi_special_tokens(int32_t n_ranks, int32_t vocab_size);

// tiktoken.model text: "<base64 bytes> <rank>\n" per rank.
std::string tiktoken_model_text(const TrainedVocab& vocab);
// tokenizer_config.json text with added_tokens_decoder (every special id), bos/eos/unk/pad_token
// and, when given, chat_template.
std::string tokenizer_config_json(const TrainedVocab& vocab, const SpecialTokens& specials,
                                  const std::optional<std::string>& chat_template);
// tokenizer.ggml.{model, pre, tokens, token_type, merges, bos/eos/unknown/padding_token_id,
// add_bos_token} and tokenizer.chat_template when given.
void add_gguf_vocab(GgufWriter& writer, const TrainedVocab& vocab, const SpecialTokens& specials,
                    const std::optional<std::string>& chat_template);

}  // namespace kiln::text
