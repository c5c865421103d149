// The model's vocab_size (the rows of its embedding and lm_head) bounds every token id kiln hands
// the model or samples. A tokenizer may have more ids than that (real checkpoints pad or reserve
// ids above the trained rows): such a tokenizer loads, with a warning, and an id at or above
// vocab_size is refused where it would enter the model (a request's prompt, logit_bias,
// stop_token_ids). Tokens the text format itself needs must be rows of the model.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "text/tokenizer.h"
#include "kernels/base/status.h"

namespace kiln {

struct VocabFit {
  int64_t model_vocab = 0;    // config vocab_size: ids [0, model_vocab) can be embedded/sampled
  int64_t tokenizer_ids = 0;  // tokenizer.vocab_size()
  int64_t ids_above = 0;      // tokenizer ids >= model_vocab
  // One line for logs and `kiln inspect`: both counts and what happens to the extra ids.
  std::string describe() const;
};

// InvalidArgument naming the token and its id when a token the model's text format needs lies at
// or above model_vocab: the tokenizer's bos and end-of-generation ids, and every special token
// the chat format emits (turn markers, tool-call markers). Otherwise the counts.
StatusOr<VocabFit> check_vocab_fit(const text::Tokenizer& tokenizer, int64_t model_vocab);

// Index of the first id outside [0, model_vocab), or -1 when every id is a row of the model.
int64_t first_id_outside(std::span<const int32_t> ids, int64_t model_vocab);

}  // namespace kiln
