// Fuzz target for the step plan decoder: the input bytes are the little-endian int32 words a
// worker receives from rank 0 (a trailing partial word is dropped). Decoding must never crash or
// over-allocate: it returns a plan or InvalidArgument. An accepted plan is well formed (known
// kind, non-negative slots, tokens in every span, spans tiling the batch's ids and pages in order)
// and encodes back to the same words.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cluster/engine/step_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kiln::serve::StepPlan;
  std::vector<int32_t> words(size / sizeof(int32_t));
  if (!words.empty()) std::memcpy(words.data(), data, words.size() * sizeof(int32_t));
  auto plan = kiln::serve::decode_plan(words);
  if (!plan.ok()) {
    if (plan.status().code() != kiln::StatusCode::kInvalidArgument) std::abort();
    if (plan.status().message().empty()) std::abort();
    return 0;
  }
  switch (plan->kind) {
    case StepPlan::Kind::kRun:
      break;
    case StepPlan::Kind::kShutdown:
    case StepPlan::Kind::kHeartbeat:
      if (!plan->batch.empty()) std::abort();
      break;
    default:
      std::abort();
  }
  int64_t ids = 0, pages = 0;
  for (const kiln::BatchSpan& s : plan->batch.spans) {
    if (s.slot < 0 || s.n <= 0 || s.begin != ids || s.pages_begin != pages) std::abort();
    ids += s.n;
    pages += s.n_pages;
  }
  if (ids != plan->batch.n_tokens() || pages != int64_t(plan->batch.new_pages.size())) std::abort();
  if (kiln::serve::encode_plan(*plan) != words) std::abort();
  return 0;
}
