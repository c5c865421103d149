#include "cluster/engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The model's raw logits are finite; a NaN or ±inf means the forward broke down (bad weights,
// overflow) and nothing sampled from the row would mean anything.
bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

bool contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

int64_t pages_for(const EngineRequest& r, int64_t page_tokens) {
  const int64_t tokens = static_cast<int64_t>(r.prompt.size()) + r.params.max_tokens;
  return (tokens + page_tokens - 1) / page_tokens;
}

}  // namespace

// One choice of a request: its own slot, pages, sampler and detokenizer.
struct Scheduler::Sequence {
  Sequence(Active* a, int i, const SamplingOptions& o, uint64_t seed, int64_t vocab,
           const text::Tokenizer& tokenizer, std::vector<std::string> stops)
      : owner(a), index(i), sampler(o, seed, vocab), decoder(tokenizer), stop(std::move(stops)) {}
  Active* owner;
  int index;
  int32_t slot = -1;
  std::vector<int32_t> pages;
  bool pages_sent = false;
  int64_t prefilled = 0;         // prompt tokens handed to a step
  int32_t next_token = -1;       // sampled, to run in the next step
  std::vector<int32_t> output;
  SequenceSampler sampler;
  text::StreamDecoder decoder;
  StopMatcher stop;
  std::vector<TokenLogprob> echo_logprobs;  // prompt logprobs (echo with logprobs)
  bool finished = false;
  Clock::time_point last_token;
};

struct Scheduler::Active {
  std::shared_ptr<EngineRequest> request;
  std::vector<std::unique_ptr<Sequence>> seqs;
  int unfinished = 0;
  Usage usage;
  bool done = false;  // every choice finished or the request was dropped
};

Scheduler::Scheduler(SchedulerOptions options, int64_t vocab, const text::Tokenizer& tokenizer,
                     Metrics* metrics)
    : options_(options),
      vocab_(vocab),
      tokenizer_(tokenizer),
      metrics_(metrics),
      eos_ids_(tokenizer.eos_ids()) {
  KILN_CHECK(vocab_ > 0);
  KILN_CHECK(options_.max_sequences > 0 && options_.n_pages > 0 && options_.page_tokens > 0);
  KILN_CHECK(options_.prefill_chunk > 0 && options_.prefill_chunk <= options_.max_batch_tokens);
  KILN_CHECK(options_.max_sequences <= options_.max_batch_tokens);
  for (int64_t s = options_.max_sequences - 1; s >= 0; --s) free_slots_.push_back(static_cast<int32_t>(s));
  for (int64_t p = options_.n_pages - 1; p >= 0; --p) free_pages_.push_back(static_cast<int32_t>(p));
  publish_gauges();
}

Scheduler::~Scheduler() = default;

void Scheduler::define_metrics(Metrics& m) {
  using T = Metrics::Type;
  const std::vector<double> latency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,      2.5,   5,    10,    30,   60};
  m.define("prompt_tokens_total", T::kCounter, "Prompt tokens admitted.");
  m.define("generation_tokens_total", T::kCounter, "Tokens generated.");
  m.define("requests_aborted_total", T::kCounter, "Requests ended early, by reason.");
  m.define("num_requests_running", T::kGauge, "Requests with sequences in the batch.");
  m.define("num_requests_waiting", T::kGauge, "Requests waiting for admission.");
  m.define("kda_slots_used", T::kGauge, "KDA state slots in use.");
  m.define("kda_slots_total", T::kGauge, "KDA state slots.");
  m.define("mla_cache_blocks_used", T::kGauge, "MLA latent cache pages in use.");
  m.define("mla_cache_blocks_total", T::kGauge, "MLA latent cache pages.");
  m.define("time_to_first_token_seconds", T::kHistogram,
           "From arrival to the first generated token.", latency);
  m.define("inter_token_latency_seconds", T::kHistogram, "Between consecutive tokens of a sequence.",
           latency);
  m.define("e2e_request_latency_seconds", T::kHistogram, "From arrival to the last token.", latency);
}

Status Scheduler::check_fits(const EngineRequest& request) const {
  const int64_t n = request.params.n;
  if (n > options_.max_sequences) {
    return invalid_argument("n = {} is more than the {} sequences this server runs at once", n,
                            options_.max_sequences);
  }
  const int64_t need = n * pages_for(request, options_.page_tokens);
  if (need > options_.n_pages) {
    return invalid_argument(
        "the request needs {} cache pages of {} tokens for its {} choice(s), the server has {}",
        need, options_.page_tokens, n, options_.n_pages);
  }
  return {};
}

Status Scheduler::enqueue(std::shared_ptr<EngineRequest> request) {
  KILN_CHECK(request && !request->prompt.empty() && request->params.n >= 1);
  KILN_RETURN_IF_ERROR(check_fits(*request));
  if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("the queue is full ({} requests waiting)", waiting_.size()));
  }
  waiting_.push_back(std::move(request));
  publish_gauges();
  return {};
}

bool Scheduler::can_admit(const EngineRequest& r) const {
  const int64_t n = r.params.n;
  return static_cast<int64_t>(free_slots_.size()) >= n &&
         static_cast<int64_t>(free_pages_.size()) >= n * pages_for(r, options_.page_tokens);
}

void Scheduler::admit() {
  while (!waiting_.empty() && can_admit(*waiting_.front())) {
    auto active = std::make_unique<Active>();
    active->request = std::move(waiting_.front());
    waiting_.pop_front();
    const EngineRequest& r = *active->request;
    const uint64_t seed = r.params.sampling.seed.value_or(0);
    const int64_t per_seq = pages_for(r, options_.page_tokens);
    for (int i = 0; i < r.params.n; ++i) {
      // Choices draw from decorrelated streams; choice 0 uses the request's seed as given.
      const uint64_t s = seed + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
      auto seq = std::make_unique<Sequence>(active.get(), i, r.params.sampling, s, vocab_,
                                            tokenizer_, r.params.stop);
      seq->slot = free_slots_.back();
      free_slots_.pop_back();
      for (int64_t p = 0; p < per_seq; ++p) {
        seq->pages.push_back(free_pages_.back());
        free_pages_.pop_back();
      }
      active->seqs.push_back(std::move(seq));
    }
    active->unfinished = r.params.n;
    active->usage.prompt_tokens = static_cast<int64_t>(r.prompt.size());
    if (metrics_ != nullptr) metrics_->add("prompt_tokens_total", static_cast<double>(r.prompt.size()));
    running_.push_back(std::move(active));
  }
}

StepPlan Scheduler::next_step() {
  planned_.clear();
  StepPlan plan;
  // Requests whose client went away: queued ones are dropped, running ones freed.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->stream->cancelled()) {
      if (metrics_ != nullptr) metrics_->add("requests_aborted_total", 1, R"(reason="client")");
      log_client_abort(**it);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& a : running_) {
    if (!a->done && a->request->stream->cancelled()) drop_request(*a, "client");
  }
  std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
  admit();

  int64_t budget = options_.max_batch_tokens;
  for (auto& a : running_) {
    for (auto& s : a->seqs) {
      if (s->finished || s->next_token < 0) continue;
      PlanSeq p;
      p.slot = s->slot;
      p.tokens = {s->next_token};
      s->next_token = -1;
      plan.seqs.push_back(std::move(p));
      planned_.push_back({s.get(), 0, 1, false, true});
      budget -= 1;
    }
  }
  const int64_t chunk = options_.prefill_chunk;
  bool blocked = false;  // FIFO: a chunk that does not fit stops later ones too
  for (auto& a : running_) {
    const EngineRequest& r = *a->request;
    const int64_t len = static_cast<int64_t>(r.prompt.size());
    for (auto& s : a->seqs) {
      if (blocked || s->finished || s->prefilled >= len) continue;
      const int64_t end = std::min(len, (s->prefilled / chunk + 1) * chunk);
      const int64_t n = end - s->prefilled;
      if (n > budget) {
        blocked = true;
        continue;
      }
      PlanSeq p;
      p.slot = s->slot;
      p.reset = !s->pages_sent;
      if (!s->pages_sent) p.new_pages = s->pages;
      s->pages_sent = true;
      p.all_logits = r.params.echo && r.params.logprobs >= 0;
      p.tokens.assign(r.prompt.begin() + s->prefilled, r.prompt.begin() + end);
      planned_.push_back({s.get(), s->prefilled, n, p.all_logits, end == len});
      s->prefilled = end;
      budget -= n;
      plan.seqs.push_back(std::move(p));
    }
  }
  publish_gauges();
  return plan;
}

void Scheduler::complete_step(const float* logits) {
  const int64_t vocab = vocab_;
  int64_t row = 0;
  for (const Planned& p : planned_) {
    Sequence& s = *p.seq;
    const EngineRequest& r = *s.owner->request;
    const int64_t rows = p.all_logits ? p.n_tokens : 1;
    const bool consumed = p.all_logits || (p.samples && !s.finished);
    if (consumed && !s.owner->done && !all_finite(logits + row * vocab, rows * vocab)) {
      fail_request(*s.owner, 500,
                   "the model produced non-finite logits (NaN or infinity) for this request",
                   "nonfinite_logits");
    }
    if (s.owner->done) {  // failed now or earlier in this step: its rows are not used
      row += rows;
      continue;
    }
    if (p.all_logits) {
      const int64_t len = static_cast<int64_t>(r.prompt.size());
      if (p.pos0 == 0) s.echo_logprobs.push_back({r.prompt[0], std::nanf(""), {}});
      for (int64_t i = 0; i < p.n_tokens && p.pos0 + i + 1 < len; ++i) {
        s.echo_logprobs.push_back(token_logprob(logits + (row + i) * vocab, vocab,
                                                r.prompt[p.pos0 + i + 1], r.params.logprobs));
      }
    }
    if (p.samples && !s.finished) {
      if (s.output.empty() && r.params.echo) {
        Event e;
        e.kind = Event::Kind::kDelta;
        e.index = s.index;
        e.is_echo = true;
        e.text = tokenizer_.decode(r.prompt);
        e.tokens = r.prompt;
        e.logprobs = std::move(s.echo_logprobs);
        r.stream->push(std::move(e));
      }
      emit_token(s, logits + (row + rows - 1) * vocab);
    }
    row += rows;
  }
  planned_.clear();
  std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
  publish_gauges();
}

void Scheduler::emit_token(Sequence& s, const float* row) {
  const int64_t vocab = vocab_;
  Active& a = *s.owner;
  const EngineRequest& r = *a.request;
  const GenerateParams& g = r.params;
  banned_.clear();
  if (static_cast<int64_t>(s.output.size()) < g.min_tokens) {
    if (!g.ignore_eos) banned_ = eos_ids_;
    banned_.insert(banned_.end(), g.stop_token_ids.begin(), g.stop_token_ids.end());
  }
  scratch_.assign(row, row + vocab);
  const int32_t token = s.sampler.sample(scratch_.data(), r.prompt, banned_);
  s.sampler.accept(token);
  s.output.push_back(token);
  if (metrics_ != nullptr) {
    metrics_->add("generation_tokens_total", 1);
    if (s.output.size() == 1) {
      metrics_->observe("time_to_first_token_seconds", seconds_since(r.arrival));
    } else {
      metrics_->observe("inter_token_latency_seconds", seconds_since(s.last_token));
    }
  }
  s.last_token = Clock::now();

  Event e;
  e.kind = Event::Kind::kDelta;
  e.index = s.index;
  e.tokens = {token};
  if (g.logprobs >= 0) e.logprobs.push_back(token_logprob(row, vocab, token, g.logprobs));
  const bool end_token = (!g.ignore_eos && contains(eos_ids_, token)) || contains(g.stop_token_ids, token);
  std::optional<std::string> reason;
  if (!end_token) {
    // Special tokens (turn markers, reserved ids) are not part of the text, as in vLLM's default
    // skip_special_tokens; they still count as generated tokens.
    StopMatcher::Result m =
        s.stop.push(tokenizer_.is_special(token) ? std::string() : s.decoder.push(token));
    e.text = std::move(m.emit);
    if (m.stopped) reason = "stop";
  } else {
    reason = "stop";
  }
  if (!reason && static_cast<int64_t>(s.output.size()) >= g.max_tokens) reason = "length";
  if (!reason && static_cast<int64_t>(r.prompt.size() + s.output.size()) >= options_.max_context) {
    reason = "length";
  }
  if (reason && (*reason != "stop" || end_token)) {
    // Ended without a stop string: what the decoder and the matcher hold back is output.
    StopMatcher::Result m = s.stop.push(s.decoder.flush());
    e.text += m.emit;
    if (!m.stopped) e.text += s.stop.flush();
  }
  e.finish_reason = reason;
  r.stream->push(std::move(e));
  if (reason) {
    finish(s);
  } else {
    s.next_token = token;
  }
}

void Scheduler::finish(Sequence& s) {
  Active& a = *s.owner;
  s.finished = true;
  a.usage.completion_tokens += static_cast<int64_t>(s.output.size());
  release(s);
  if (--a.unfinished == 0 && !a.done) {
    a.done = true;
    if (metrics_ != nullptr) {
      metrics_->observe("e2e_request_latency_seconds", seconds_since(a.request->arrival));
    }
    Event e;
    e.kind = Event::Kind::kDone;
    e.usage = a.usage;
    a.request->stream->push(std::move(e));
  }
}

void Scheduler::release(Sequence& s) {
  if (s.slot >= 0) free_slots_.push_back(s.slot);
  s.slot = -1;
  free_pages_.insert(free_pages_.end(), s.pages.rbegin(), s.pages.rend());
  s.pages.clear();
  // Keep the stacks handing out the lowest ids first (deterministic placement).
  std::sort(free_slots_.begin(), free_slots_.end(), std::greater<>());
  std::sort(free_pages_.begin(), free_pages_.end(), std::greater<>());
}

void Scheduler::drop_request(Active& a, const std::string& reason) {
  for (auto& s : a.seqs) {
    if (!s->finished) {
      s->finished = true;
      release(*s);
    }
  }
  a.done = true;
  if (metrics_ != nullptr) {
    metrics_->add("requests_aborted_total", 1, Metrics::label("reason", reason));
  }
  if (reason == "client") log_client_abort(*a.request);
}

void Scheduler::log_client_abort(const EngineRequest& r) {
  // The contract (reliability.md §B): a disconnect aborts the request within one step, so at most
  // the step under way at cancel() adds a token per choice. tests/http/test_cancel.py reads this.
  spdlog::info("request {}: client gone, aborted after {} generated token(s), {} after the "
               "disconnect ({} choice(s))",
               r.id, r.stream->tokens(), r.stream->tokens_after_cancel(), r.params.n);
}

void Scheduler::fail_request(Active& a, int status, const std::string& message,
                             const std::string& reason) {
  drop_request(a, reason);
  Event e;
  e.kind = Event::Kind::kError;
  e.status = status;
  e.message = message;
  a.request->stream->push(std::move(e));
}

void Scheduler::abort_all(int status, const std::string& message, const std::string& reason) {
  auto fail = [&](EngineRequest& r) {
    Event e;
    e.kind = Event::Kind::kError;
    e.status = status;
    e.message = message;
    r.stream->push(std::move(e));
  };
  for (auto& a : running_) {
    if (a->done) continue;
    drop_request(*a, reason);
    fail(*a->request);
  }
  running_.clear();
  for (auto& r : waiting_) {
    if (metrics_ != nullptr) metrics_->add("requests_aborted_total", 1, Metrics::label("reason", reason));
    fail(*r);
  }
  waiting_.clear();
  planned_.clear();
  publish_gauges();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.running_requests = static_cast<int64_t>(running_.size());
  s.waiting_requests = static_cast<int64_t>(waiting_.size());
  s.slots_total = options_.max_sequences;
  s.slots_used = s.slots_total - static_cast<int64_t>(free_slots_.size());
  s.pages_total = options_.n_pages;
  s.pages_used = s.pages_total - static_cast<int64_t>(free_pages_.size());
  return s;
}

void Scheduler::publish_gauges() {
  if (metrics_ == nullptr) return;
  const SchedulerStats s = stats();
  metrics_->set("num_requests_running", static_cast<double>(s.running_requests));
  metrics_->set("num_requests_waiting", static_cast<double>(s.waiting_requests));
  metrics_->set("kda_slots_used", static_cast<double>(s.slots_used));
  metrics_->set("kda_slots_total", static_cast<double>(s.slots_total));
  metrics_->set("mla_cache_blocks_used", static_cast<double>(s.pages_used));
  metrics_->set("mla_cache_blocks_total", static_cast<double>(s.pages_total));
}

}  // namespace kiln::serve
