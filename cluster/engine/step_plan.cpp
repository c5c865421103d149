#include "cluster/engine/step_plan.h"

#include <algorithm>
#include <span>

#include "kernels/base/check.h"

namespace kiln::serve {

std::vector<int32_t> encode_plan(const StepPlan& plan) {
  const Batch& b = plan.batch;
  std::vector<int32_t> w;
  w.reserve(2 + b.spans.size() * 4 + b.ids.size() + b.new_pages.size());
  w.push_back(static_cast<int32_t>(plan.kind));
  w.push_back(static_cast<int32_t>(b.spans.size()));
  for (const BatchSpan& s : b.spans) {
    w.push_back(s.slot);
    w.push_back((s.reset ? 1 : 0) | (s.all_logits ? 2 : 0));
    w.push_back(static_cast<int32_t>(s.n_pages));
    w.push_back(static_cast<int32_t>(s.n));
    const auto pages = b.pages(s);
    const auto tokens = b.tokens(s);
    w.insert(w.end(), pages.begin(), pages.end());
    w.insert(w.end(), tokens.begin(), tokens.end());
  }
  return w;
}

StatusOr<StepPlan> decode_plan(const std::vector<int32_t>& w) {
  size_t at = 0;
  auto need = [&](size_t n) { return w.size() - at >= n; };
  if (!need(2)) return invalid_argument("step plan: truncated header ({} words)", w.size());
  StepPlan plan;
  const int32_t kind = w[at++];
  if (kind < 1 || kind > 3) return invalid_argument("step plan: unknown kind {}", kind);
  plan.kind = static_cast<StepPlan::Kind>(kind);
  const int32_t n = w[at++];
  if (n < 0) return invalid_argument("step plan: negative sequence count {}", n);
  if (plan.kind != StepPlan::Kind::kRun && n != 0) {
    return invalid_argument("step plan: a {} plan has {} sequences",
                            plan.kind == StepPlan::Kind::kShutdown ? "shutdown" : "heartbeat", n);
  }
  Batch& batch = plan.batch;
  batch.spans.reserve(static_cast<size_t>(std::min<int32_t>(n, 4096)));
  batch.ids.reserve(w.size() - at);
  for (int32_t i = 0; i < n; ++i) {
    if (!need(4)) return invalid_argument("step plan: sequence {} truncated", i);
    const int32_t slot = w[at++];
    const int32_t flags = w[at++];
    const int32_t n_pages = w[at++], n_tokens = w[at++];
    if (slot < 0 || n_pages < 0 || n_tokens <= 0 || (flags & ~3) != 0) {
      return invalid_argument("step plan: sequence {} has slot {}, flags {}, {} pages, {} tokens", i,
                              slot, flags, n_pages, n_tokens);
    }
    if (!need(static_cast<size_t>(n_pages) + static_cast<size_t>(n_tokens))) {
      return invalid_argument("step plan: sequence {} truncated", i);
    }
    const std::span<const int32_t> pages(w.data() + at, static_cast<size_t>(n_pages));
    at += static_cast<size_t>(n_pages);
    const std::span<const int32_t> tokens(w.data() + at, static_cast<size_t>(n_tokens));
    at += static_cast<size_t>(n_tokens);
    batch.add(slot, tokens, (flags & 2) != 0, (flags & 1) != 0, pages);
  }
  if (at != w.size()) return invalid_argument("step plan: {} trailing words", w.size() - at);
  return plan;
}

void send_plan(Communicator& control, const StepPlan& plan) {
  std::vector<int32_t> words = encode_plan(plan);
  int64_t n = static_cast<int64_t>(words.size());
  control.broadcast_idle(&n, sizeof(n), 0);
  control.broadcast(words.data(), n * static_cast<int64_t>(sizeof(int32_t)), 0);
}

StepPlan receive_plan(Communicator& control) {
  int64_t n = 0;
  control.broadcast_idle(&n, sizeof(n), 0);
  KILN_CHECK_MSG(n >= 2 && n < (int64_t{1} << 30), "step plan: bad length");
  std::vector<int32_t> words(static_cast<size_t>(n));
  control.broadcast(words.data(), n * static_cast<int64_t>(sizeof(int32_t)), 0);
  StatusOr<StepPlan> plan = decode_plan(words);
  KILN_CHECK_MSG(plan.ok(), "step plan: malformed broadcast");
  return std::move(plan).value();
}

}  // namespace kiln::serve
