// OutputProcessor (rank 0, engine thread): turns a step's logits into each request's output:
// prompt logprobs and the echo, the next token (penalties, banned ids, the seeded sampler), its
// logprobs, detokenizing, stop tokens and stop strings, the events pushed to the request's stream
// and the token-latency metrics. It holds no slots or pages: the Scheduler says which logits rows
// belong to which choice and frees what a finished choice held.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/serve/metrics.h"
#include "cluster/engine/request.h"
#include "cluster/engine/sampling.h"
#include "text/tokenizer.h"

namespace kiln::serve {

// One choice's output so far: its sampler, detokenizer and stop matcher.
struct ChoiceState {
  // The choice's seed is the request's (drawn by the engine when absent) for choice 0, and a
  // decorrelated stream for the others.
  ChoiceState(const EngineRequest& request, int index, int64_t vocab,
               const text::Tokenizer& tokenizer);
  int index;
  std::vector<int32_t> output;              // generated tokens
  std::vector<TokenLogprob> echo_logprobs;  // prompt logprobs (echo with logprobs), until sent
  SequenceSampler sampler;
  text::StreamDecoder decoder;
  StopMatcher stop;
  std::chrono::steady_clock::time_point last_token;
};

class OutputProcessor {
 public:
  // vocab: the length of a logits row. max_context: a choice ends ("length") when prompt +
  // output reach it. metrics may be null; its families are defined by define_metrics().
  OutputProcessor(int64_t vocab, int64_t max_context, const text::Tokenizer& tokenizer,
                  Metrics* metrics);

  // Registers the metric families the output processor updates.
  static void define_metrics(Metrics& metrics);

  int64_t vocab() const { return vocab_; }
  const text::Tokenizer& tokenizer() const { return tokenizer_; }

  // Whether rows [n_rows][vocab] are all finite. The model's raw logits are finite; a NaN or ±∞
  // means the forward broke down (bad weights, overflow) and nothing drawn from them would mean
  // anything: the scheduler ends the request with fail().
  bool finite(const float* rows, int64_t n_rows) const;

  // Records the prompt logprobs of a chunk of `n` prompt tokens from position pos0, whose every
  // row came back (all_logits): row i scores prompt token pos0 + i + 1; position 0 gets NaN.
  void add_prompt_logprobs(ChoiceState& choice, const EngineRequest& request, int64_t pos0,
                           int64_t n, const float* rows);

  // Chooses the choice's next token from its last row and pushes its delta (after the echo on
  // the first token, when asked for). Returns the token to run next, or −1 when the choice ended
  // (its last delta, with finish_reason, is pushed).
  int32_t next_token(ChoiceState& choice, const EngineRequest& request, const float* row);

  // The request's last events: kDone with its usage (and the end-to-end latency metric), or
  // kError with an HTTP status and a message safe to show the client.
  void done(const EngineRequest& request, const Usage& usage);
  static void fail(const EngineRequest& request, int status, const std::string& message);

 private:
  // The finish reason after `token` ("stop" | "length", none while running) and the delta's text.
  std::optional<std::string> detokenize(ChoiceState& choice, const EngineRequest& request,
                                        int32_t token, std::string& text);
  void observe_token(ChoiceState& choice, const EngineRequest& request);

  int64_t vocab_;
  int64_t max_context_;
  text::Tokenizer tokenizer_;
  Metrics* metrics_;
  std::vector<int32_t> eos_ids_;
  std::vector<int32_t> banned_;  // scratch of next_token
  std::vector<float> scratch_;   // the logits row the sampler may modify
};

}  // namespace kiln::serve
