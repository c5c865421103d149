#include "cluster/engine/output_processor.h"

#include <algorithm>
#include <cmath>

#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

uint64_t choice_seed(const EngineRequest& r, int index) {
  // Choices draw from decorrelated streams; choice 0 uses the request's seed as given.
  return r.params.sampling.seed.value_or(0) + static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull;
}

}  // namespace

ChoiceState::ChoiceState(const EngineRequest& request, int i, int64_t vocab,
                           const text::Tokenizer& tokenizer)
    : index(i),
      sampler(request.params.sampling, choice_seed(request, i), vocab),
      decoder(tokenizer),
      stop(request.params.stop) {}

OutputProcessor::OutputProcessor(int64_t vocab, int64_t max_context,
                                 const text::Tokenizer& tokenizer, Metrics* metrics)
    : vocab_(vocab),
      max_context_(max_context),
      tokenizer_(tokenizer),
      metrics_(metrics),
      eos_ids_(tokenizer.eos_ids()) {
  KILN_CHECK(vocab_ > 0);
}

void OutputProcessor::define_metrics(Metrics& m) {
  using T = Metrics::Type;
  const std::vector<double> latency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,      2.5,   5,    10,    30,   60};
  m.define("generation_tokens_total", T::kCounter, "Tokens generated.");
  m.define("time_to_first_token_seconds", T::kHistogram,
           "From arrival to the first generated token.", latency);
  m.define("inter_token_latency_seconds", T::kHistogram, "Between consecutive tokens of a sequence.",
           latency);
  m.define("e2e_request_latency_seconds", T::kHistogram, "From arrival to the last token.", latency);
}

bool OutputProcessor::finite(const float* rows, int64_t n_rows) const {
  const int64_t n = n_rows * vocab_;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(rows[i])) return false;
  return true;
}

void OutputProcessor::add_prompt_logprobs(ChoiceState& c, const EngineRequest& r, int64_t pos0,
                                          int64_t n, const float* rows) {
  const int64_t len = static_cast<int64_t>(r.prompt.size());
  if (pos0 == 0) c.echo_logprobs.push_back({r.prompt[0], std::nanf(""), {}});
  for (int64_t i = 0; i < n && pos0 + i + 1 < len; ++i) {
    c.echo_logprobs.push_back(token_logprob(rows + i * vocab_, vocab_, r.prompt[pos0 + i + 1],
                                            r.params.logprobs));
  }
}

int32_t OutputProcessor::next_token(ChoiceState& c, const EngineRequest& r, const float* row) {
  const GenerateParams& g = r.params;
  if (c.output.empty() && g.echo) {
    Event e;
    e.kind = Event::Kind::kDelta;
    e.index = c.index;
    e.is_echo = true;
    e.text = tokenizer_.decode(r.prompt);
    e.tokens = r.prompt;
    e.logprobs = std::move(c.echo_logprobs);
    r.stream->push(std::move(e));
  }
  banned_.clear();
  if (static_cast<int64_t>(c.output.size()) < g.min_tokens) {
    if (!g.ignore_eos) banned_ = eos_ids_;
    banned_.insert(banned_.end(), g.stop_token_ids.begin(), g.stop_token_ids.end());
  }
  scratch_.assign(row, row + vocab_);
  const int32_t token = c.sampler.sample(scratch_.data(), r.prompt, banned_);
  c.sampler.accept(token);
  c.output.push_back(token);
  observe_token(c, r);

  Event e;
  e.kind = Event::Kind::kDelta;
  e.index = c.index;
  e.tokens = {token};
  if (g.logprobs >= 0) e.logprobs.push_back(token_logprob(row, vocab_, token, g.logprobs));
  e.finish_reason = detokenize(c, r, token, e.text);
  const bool finished = e.finish_reason.has_value();
  r.stream->push(std::move(e));
  return finished ? -1 : token;
}

std::optional<std::string> OutputProcessor::detokenize(ChoiceState& c, const EngineRequest& r,
                                                       int32_t token, std::string& text) {
  const GenerateParams& g = r.params;
  const bool end_token =
      (!g.ignore_eos && contains(eos_ids_, token)) || contains(g.stop_token_ids, token);
  std::optional<std::string> reason;
  if (!end_token) {
    // Special tokens (turn markers, reserved ids) are not part of the text unless asked for, as
    // with vLLM's skip_special_tokens; they still count as generated tokens.
    const bool skip = g.skip_special_tokens && tokenizer_.is_special(token);
    StopMatcher::Result m = c.stop.push(skip ? std::string() : c.decoder.push(token));
    text = std::move(m.emit);
    if (m.stopped) reason = "stop";
  } else {
    reason = "stop";
  }
  if (!reason && static_cast<int64_t>(c.output.size()) >= g.max_tokens) reason = "length";
  if (!reason && static_cast<int64_t>(r.prompt.size() + c.output.size()) >= max_context_) {
    reason = "length";
  }
  if (reason && (*reason != "stop" || end_token)) {
    // Ended without a stop string: what the decoder and the matcher hold back is output.
    StopMatcher::Result m = c.stop.push(c.decoder.flush());
    text += m.emit;
    if (!m.stopped) text += c.stop.flush();
  }
  return reason;
}

void OutputProcessor::observe_token(ChoiceState& c, const EngineRequest& r) {
  if (metrics_ != nullptr) {
    metrics_->add("generation_tokens_total", 1);
    if (c.output.size() == 1) {
      metrics_->observe("time_to_first_token_seconds", seconds_since(r.arrival));
    } else {
      metrics_->observe("inter_token_latency_seconds", seconds_since(c.last_token));
    }
  }
  c.last_token = Clock::now();
}

void OutputProcessor::done(const EngineRequest& r, const Usage& usage) {
  if (metrics_ != nullptr) {
    metrics_->observe("e2e_request_latency_seconds", seconds_since(r.arrival));
  }
  Event e;
  e.kind = Event::Kind::kDone;
  e.usage = usage;
  r.stream->push(std::move(e));
}

void OutputProcessor::fail(const EngineRequest& r, int status, const std::string& message) {
  Event e;
  e.kind = Event::Kind::kError;
  e.status = status;
  e.message = message;
  r.stream->push(std::move(e));
}

}  // namespace kiln::serve
