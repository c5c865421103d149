// Single-request runs through the serving engine with an in-process sink (`kiln generate`):
// prefill the prompt in one step, then decode token by token, streaming UTF-8-safe text.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "text/vocab_fit.h"
#include "cluster/engine/request.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cpu/thread_pool.h"
#include "shard/model.h"

namespace kiln {

struct GenerationOptions {
  int64_t max_tokens = 64;
  cpu::SamplingParams sampling;
  uint64_t seed = 0;
  bool stop_at_eos = true;
};

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  std::string finish_reason;  // "stop" (end-of-generation token) or "length"
};

// InvalidArgument for an empty prompt, a token id the model cannot embed (naming it), or prompt +
// max_tokens beyond the model's context.
Status check_prompt(const std::vector<int32_t>& prompt, int64_t max_tokens,
                    const ModelConfig& config, const text::Tokenizer& tokenizer);

// Runs one request (checked with check_prompt) through an Engine sized for it, on a fresh paged
// state: rank 0 (or the only rank) runs the engine on the calling thread and passes each of the
// request's events to on_event there; the other ranks of `control` run the worker loop, as in a
// server, until rank 0 sends the shutdown plan. An error is the engine's or the state's.
Status run_one_request(KimiLinearModel& model, cpu::ThreadPool& pool,
                       const text::Tokenizer& tokenizer, Communicator* control,
                       std::shared_ptr<serve::EngineRequest> request,
                       const std::function<void(serve::Event&)>& on_event);

// In a parallel job every rank calls generate with the same prompt and options and `control`
// spanning all ranks: rank 0 runs the engine (and samples), every rank runs the forward of each
// step plan; on_text and stats are produced on rank 0 only. control = nullptr: one rank. A
// request the engine ends with an error (non-finite logits) is an internal error.
Status generate(KimiLinearModel& model, cpu::ThreadPool& pool, const text::Tokenizer& tokenizer,
                const std::vector<int32_t>& prompt, const GenerationOptions& options,
                const std::function<void(std::string_view)>& on_text, GenerationStats* stats,
                Communicator* control = nullptr);

// The tokenizer stored with a checkpoint (GGUF vocabulary or the HF directory's files), checked
// against the model's vocab_size (check_vocab_fit: an error when a token the text format needs is
// not a row of the model; a logged warning when the tokenizer has more ids than the model, unless
// fit is given: it then receives the counts and nothing is logged).
StatusOr<text::Tokenizer> load_tokenizer(const Checkpoint& checkpoint, VocabFit* fit = nullptr);

}  // namespace kiln

namespace kiln {
// The prompt as one user turn in the checkpoint's chat format: the default system text comes
// from the checkpoint's chat template when it has one (system, when not empty, overrides it).
// Chat rendering options for the checkpoint: the default system text of its chat template. An
// error names a template file that exists but cannot be read.
StatusOr<text::ChatOptions> chat_options(const Checkpoint& checkpoint);
StatusOr<std::string> render_chat_prompt(const Checkpoint& checkpoint, const std::string& system,
                                         const std::string& user);
}  // namespace kiln
