#include "cluster/engine/step_plan.h"

#include "kernels/base/check.h"

namespace kiln::serve {

int64_t StepPlan::n_tokens() const {
  int64_t n = 0;
  for (const PlanSeq& s : seqs) n += static_cast<int64_t>(s.tokens.size());
  return n;
}

// Layout: kind, n_seqs, then per sequence: slot, flags (1 reset, 2 all_logits), n_pages,
// n_tokens, pages..., tokens...
std::vector<int32_t> encode_plan(const StepPlan& plan) {
  std::vector<int32_t> w;
  w.reserve(2 + plan.seqs.size() * 4 + static_cast<size_t>(plan.n_tokens()));
  w.push_back(static_cast<int32_t>(plan.kind));
  w.push_back(static_cast<int32_t>(plan.seqs.size()));
  for (const PlanSeq& s : plan.seqs) {
    w.push_back(s.slot);
    w.push_back((s.reset ? 1 : 0) | (s.all_logits ? 2 : 0));
    w.push_back(static_cast<int32_t>(s.new_pages.size()));
    w.push_back(static_cast<int32_t>(s.tokens.size()));
    w.insert(w.end(), s.new_pages.begin(), s.new_pages.end());
    w.insert(w.end(), s.tokens.begin(), s.tokens.end());
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
  plan.seqs.reserve(static_cast<size_t>(std::min<int32_t>(n, 4096)));
  for (int32_t i = 0; i < n; ++i) {
    if (!need(4)) return invalid_argument("step plan: sequence {} truncated", i);
    PlanSeq s;
    s.slot = w[at++];
    const int32_t flags = w[at++];
    const int32_t n_pages = w[at++], n_tokens = w[at++];
    if (s.slot < 0 || n_pages < 0 || n_tokens <= 0 || (flags & ~3) != 0) {
      return invalid_argument("step plan: sequence {} has slot {}, flags {}, {} pages, {} tokens", i,
                              s.slot, flags, n_pages, n_tokens);
    }
    if (!need(static_cast<size_t>(n_pages) + static_cast<size_t>(n_tokens))) {
      return invalid_argument("step plan: sequence {} truncated", i);
    }
    s.reset = (flags & 1) != 0;
    s.all_logits = (flags & 2) != 0;
    s.new_pages.assign(w.begin() + static_cast<std::ptrdiff_t>(at),
                       w.begin() + static_cast<std::ptrdiff_t>(at + static_cast<size_t>(n_pages)));
    at += static_cast<size_t>(n_pages);
    s.tokens.assign(w.begin() + static_cast<std::ptrdiff_t>(at),
                    w.begin() + static_cast<std::ptrdiff_t>(at + static_cast<size_t>(n_tokens)));
    at += static_cast<size_t>(n_tokens);
    plan.seqs.push_back(std::move(s));
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
