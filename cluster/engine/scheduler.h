// Scheduler (rank 0, engine thread): continuous batching. Requests wait in a bounded FIFO queue;
// a request is admitted when its n choices each get a KDA slot and MLA pages for prompt +
// max_tokens (reserved up front, so a running sequence never runs out and nothing is preempted).
// Every step mixes one decode token per running sequence with prefill chunks of admitted ones,
// within a token budget. Prompts are cut into chunks at fixed positions (multiples of
// prefill_chunk) and a chunk that does not fit in the step waits whole for the next one, so a
// request's arithmetic is the same alone or in any batch. After the forward, complete_step() hands
// each sequence's logits rows to the OutputProcessor (sampling, logprobs, detokenizing, stop
// conditions, events) and frees the slots and pages of the sequences that ended.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/serve/metrics.h"
#include "cluster/engine/request.h"
#include "cluster/engine/sampling.h"
#include "cluster/engine/step_plan.h"
#include "text/tokenizer.h"
#include "cluster/engine/output_processor.h"
#include "kernels/base/status.h"

namespace kiln::serve {

struct SchedulerOptions {
  int64_t max_batch_tokens = 2048;  // tokens per step
  int64_t max_sequences = 16;       // KDA slots
  int64_t prefill_chunk = 512;      // ≤ max_batch_tokens
  int64_t max_queue = 64;           // waiting requests
  int64_t n_pages = 0;              // MLA pages
  int64_t page_tokens = 16;
  int64_t max_context = 4096;       // tokens per sequence
};

// Snapshot for /health and /metrics.
struct SchedulerStats {
  int64_t running_requests = 0, waiting_requests = 0;
  int64_t slots_used = 0, slots_total = 0, pages_used = 0, pages_total = 0;
};

class Scheduler {
 public:
  // vocab: the model's vocab_size, the length of a logits row; every sampler and logprob is sized
  // by it (the tokenizer may have more ids). metrics: may be null. The metric families are defined
  // by define_metrics().
  Scheduler(SchedulerOptions options, int64_t vocab, const text::Tokenizer& tokenizer,
            Metrics* metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Registers the metric families the scheduler and its output processor update (call once per
  // Metrics).
  static void define_metrics(Metrics& metrics);

  // Whether the request could ever be admitted (InvalidArgument: more choices than slots, or more
  // pages than exist). Reads only the options: safe from any thread.
  Status check_fits(const EngineRequest& request) const;

  // Thread-unsafe: called on the engine thread only (the Engine serialises submissions).
  // ResourceExhausted when the queue is full; InvalidArgument when the request can never be
  // admitted (more choices than slots, or more pages than exist).
  Status enqueue(std::shared_ptr<EngineRequest> request);

  // Drops cancelled requests, admits what fits and builds the next step into `batch` (cleared
  // first; its storage is reused): the step plan every rank runs. Empty when there is nothing to
  // run. Decode tokens come first, then prefill chunks; a new sequence's first span resets its
  // slot and carries all its pages.
  void next_step(Batch& batch);
  // The forward's logits [rows][vocab] for the batch built by the last next_step(): per span
  // either one row per token (all_logits) or one row, in span order. A request whose
  // rows hold a NaN or an infinity (a numerically broken model or checkpoint) ends with an error
  // event (500) and is freed; the other requests of the step go on.
  void complete_step(const float* logits);

  // Ends every request (running and waiting) with an error event carrying `status` and
  // `message`, and frees everything.
  void abort_all(int status, const std::string& message, const std::string& reason);

  bool idle() const { return running_.empty() && waiting_.empty(); }
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Sequence;
  struct Active;
  void admit();
  bool can_admit(const EngineRequest& request) const;
  void finish(Sequence& seq);
  void release(Sequence& seq);
  void drop_request(Active& active, const std::string& reason);
  void log_client_abort(const EngineRequest& request);
  // Ends a running request with an error event and frees its sequences.
  void fail_request(Active& active, int status, const std::string& message,
                    const std::string& reason);
  void publish_gauges();

  SchedulerOptions options_;
  Metrics* metrics_;
  OutputProcessor outputs_;
  std::deque<std::shared_ptr<EngineRequest>> waiting_;
  std::vector<std::unique_ptr<Active>> running_;  // admission order
  std::vector<int32_t> free_slots_;               // stack, lowest slot on top
  std::vector<int32_t> free_pages_;               // stack, lowest page on top
  // The batch under way: which sequence each span belongs to.
  struct Planned {
    Sequence* seq;
    int64_t pos0;      // first prompt position of a prefill chunk
    int64_t n_tokens;
    bool all_logits;
    bool samples;  // the entry ends the prompt or is a decode step: sample from its last row
  };
  std::vector<Planned> planned_;
};

}  // namespace kiln::serve
