// What the gateway hands the engine for one generation request, and what the engine sends back.
// The gateway (Asio threads) parses and tokenizes; the engine (its own thread on rank 0) runs the
// request and pushes Events into the request's RequestStream, which wakes the gateway session.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::serve {

// Per-request sampling settings (serving.md "Request fields"). Defaults are "off".
struct SamplingOptions {
  float temperature = 1.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 or -1 = off (stored as 0)
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float presence_penalty = 0.0f;    // [-2, 2], over generated tokens
  float frequency_penalty = 0.0f;   // [-2, 2], over generated tokens
  float repetition_penalty = 1.0f;  // (0, 2], over prompt and generated tokens (HF/vLLM form)
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id → bias in [-100, 100]
  std::optional<uint64_t> seed;     // empty = drawn by the server
};

struct GenerateParams {
  int64_t max_tokens = 16;   // generated tokens per choice (resolved: never "default" here)
  int64_t min_tokens = 0;    // end-of-generation and stop_token_ids suppressed before this many
  bool ignore_eos = false;   // do not stop at the model's end-of-generation tokens
  std::vector<std::string> stop;         // stop strings (not emitted)
  std::vector<int32_t> stop_token_ids;   // extra stop tokens (not emitted as text)
  int n = 1;                 // choices, each its own sequence
  int logprobs = -1;         // -1 = none; k ≥ 0 = the sampled token's logprob plus the top k
  bool echo = false;         // completions: the prompt text (and its logprobs) precede the output
  bool skip_special_tokens = true;  // special tokens add no text (as vLLM's default)
  SamplingOptions sampling;
};

// Log-probability (natural log, of the model's raw distribution) of one token and the top
// alternatives at that position, best first.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

struct Usage {
  int64_t prompt_tokens = 0;      // per request (the prompt counted once whatever n is)
  int64_t completion_tokens = 0;  // summed over choices
};

// One engine → gateway message. A request gets any number of kDelta events, then exactly one of
// kDone (all choices finished) or kError (it will get nothing more).
struct Event {
  enum class Kind { kDelta, kDone, kError };
  Kind kind = Kind::kDelta;
  // kDelta: one choice's new output. text is UTF-8-complete (held back until a character ends),
  // with stop strings removed; tokens are the ids behind it (possibly more ids than text);
  // finish_reason ("stop" | "length" | "abort") is set on the choice's last delta.
  int index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;          // one per token when logprobs ≥ 0
  std::optional<std::string> finish_reason;
  // Prompt echo (completions with echo): sent once, as the first delta of each choice.
  bool is_echo = false;
  // kDone
  Usage usage;
  // kError: HTTP status to use if nothing was sent yet (503 unavailable, 500 internal), message
  // safe to show the client.
  int status = 500;
  std::string message;
};

// Thread-safe mailbox between the engine (producer) and one gateway session (consumer). The
// consumer sets a wake-up callback; push() calls it after every event (from the engine thread),
// so it must only schedule work (e.g. post to an executor), never block.
class RequestStream {
 public:
  // After the final event (kDone or kError) the stream is closed: later pushes are dropped, so a
  // failure reported from another thread and the engine's own last event cannot both arrive.
  void push(Event event) {
    std::function<void()> wake;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = event.kind != Event::Kind::kDelta;
      if (event.kind == Event::Kind::kDelta && !event.is_echo) {
        const auto n = static_cast<int64_t>(event.tokens.size());
        tokens_ += n;
        if (cancelled()) tokens_after_cancel_ += n;
      }
      events_.push_back(std::move(event));
      wake = wake_;
    }
    if (wake) wake();
  }
  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  std::vector<Event> take() {
    std::lock_guard lock(mu_);
    std::vector<Event> out;
    out.swap(events_);
    return out;
  }
  void set_wakeup(std::function<void()> wake) {
    bool pending;
    {
      std::lock_guard lock(mu_);
      wake_ = std::move(wake);
      pending = !events_.empty();
    }
    if (pending && wake_) wake_();
  }
  // Client gone: the engine aborts the request at its next step and frees its state.
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // Generated tokens pushed (echo excluded), in all and after cancel(): the step under way when
  // the client left may still add one token per choice, nothing later (the abort log reports it).
  int64_t tokens() const {
    std::lock_guard lock(mu_);
    return tokens_;
  }
  int64_t tokens_after_cancel() const {
    std::lock_guard lock(mu_);
    return tokens_after_cancel_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
  bool closed_ = false;
  int64_t tokens_ = 0, tokens_after_cancel_ = 0;
  std::function<void()> wake_;
  std::atomic<bool> cancelled_{false};
};

// A validated, tokenized request, owned jointly by the gateway session and the engine.
struct EngineRequest {
  std::string id;                   // request id (also in logs and the response "id")
  std::vector<int32_t> prompt;      // never empty
  GenerateParams params;
  std::shared_ptr<RequestStream> stream;
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

}  // namespace kiln::serve
