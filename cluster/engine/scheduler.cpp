#include "cluster/engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

int64_t pages_for(const EngineRequest& r, int64_t page_tokens) {
  const int64_t tokens = static_cast<int64_t>(r.prompt.size()) + r.params.max_tokens;
  return (tokens + page_tokens - 1) / page_tokens;
}

}  // namespace

// One choice of a request: its own slot and pages, and its output (OutputProcessor).
struct Scheduler::Sequence {
  Sequence(Active* a, const EngineRequest& request, int i, int64_t vocab,
           const text::Tokenizer& tokenizer)
      : owner(a), out(request, i, vocab, tokenizer) {}
  Active* owner;
  int32_t slot = -1;
  std::vector<int32_t> pages;
  bool pages_sent = false;
  int64_t prefilled = 0;    // prompt tokens handed to a step
  int32_t next_token = -1;  // sampled, to run in the next step
  bool finished = false;
  ChoiceState out;
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
      metrics_(metrics),
      outputs_(vocab, options.max_context, tokenizer, metrics) {
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
  OutputProcessor::define_metrics(m);
  m.define("prompt_tokens_total", T::kCounter, "Prompt tokens admitted.");
  m.define("requests_aborted_total", T::kCounter, "Requests ended early, by reason.");
  m.define("num_requests_running", T::kGauge, "Requests with sequences in the batch.");
  m.define("num_requests_waiting", T::kGauge, "Requests waiting for admission.");
  m.define("kda_slots_used", T::kGauge, "KDA state slots in use.");
  m.define("kda_slots_total", T::kGauge, "KDA state slots.");
  m.define("mla_cache_blocks_used", T::kGauge, "MLA latent cache pages in use.");
  m.define("mla_cache_blocks_total", T::kGauge, "MLA latent cache pages.");
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
    const int64_t per_seq = pages_for(r, options_.page_tokens);
    for (int i = 0; i < r.params.n; ++i) {
      auto seq = std::make_unique<Sequence>(active.get(), r, i, outputs_.vocab(),
                                            outputs_.tokenizer());
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

void Scheduler::next_step(Batch& batch) {
  planned_.clear();
  batch.clear();
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
      batch.add(s->slot, {&s->next_token, 1});
      s->next_token = -1;
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
      const bool all_logits = r.params.echo && r.params.logprobs >= 0;
      const bool first = !s->pages_sent;  // a new sequence: reset the slot, hand it its pages
      const std::span<const int32_t> prompt(r.prompt), pages(s->pages);
      batch.add(s->slot, prompt.subspan(static_cast<size_t>(s->prefilled), static_cast<size_t>(n)),
                all_logits, first, first ? pages : pages.first(0));
      s->pages_sent = true;
      planned_.push_back({s.get(), s->prefilled, n, all_logits, end == len});
      s->prefilled = end;
      budget -= n;
    }
  }
  publish_gauges();
}

void Scheduler::complete_step(const float* logits) {
  const int64_t vocab = outputs_.vocab();
  int64_t row = 0;
  for (const Planned& p : planned_) {
    Sequence& s = *p.seq;
    const EngineRequest& r = *s.owner->request;
    const int64_t rows = p.all_logits ? p.n_tokens : 1;
    const float* first = logits + row * vocab;
    row += rows;
    const bool consumed = p.all_logits || (p.samples && !s.finished);
    if (consumed && !s.owner->done && !outputs_.finite(first, rows)) {
      fail_request(*s.owner, 500,
                   "the model produced non-finite logits (NaN or infinity) for this request",
                   "nonfinite_logits");
    }
    if (s.owner->done) continue;  // failed now or earlier in this step: its rows are not used
    if (p.all_logits) outputs_.add_prompt_logprobs(s.out, r, p.pos0, p.n_tokens, first);
    if (p.samples && !s.finished) {
      s.next_token = outputs_.next_token(s.out, r, first + (rows - 1) * vocab);
      if (s.next_token < 0) finish(s);
    }
  }
  planned_.clear();
  std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
  publish_gauges();
}

void Scheduler::finish(Sequence& s) {
  Active& a = *s.owner;
  s.finished = true;
  a.usage.completion_tokens += static_cast<int64_t>(s.out.output.size());
  release(s);
  if (--a.unfinished == 0 && !a.done) {
    a.done = true;
    outputs_.done(*a.request, a.usage);
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
  OutputProcessor::fail(*a.request, status, message);
}

void Scheduler::abort_all(int status, const std::string& message, const std::string& reason) {
  for (auto& a : running_) {
    if (a->done) continue;
    drop_request(*a, reason);
    OutputProcessor::fail(*a->request, status, message);
  }
  running_.clear();
  for (auto& r : waiting_) {
    if (metrics_ != nullptr) metrics_->add("requests_aborted_total", 1, Metrics::label("reason", reason));
    OutputProcessor::fail(*r, status, message);
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
