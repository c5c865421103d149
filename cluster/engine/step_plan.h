// StepPlan: what every rank does in one engine step, decided by rank 0's scheduler and broadcast
// over the control communicator (architecture.md §1): run a Batch (shard/batch.h, the same value
// every rank then passes to the forward, which applies its resets and new pages), answer a
// heartbeat, or shut down. Encoded as little-endian int32 words.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/base/status.h"
#include "shard/batch.h"
#include "shard/communicator.h"

namespace kiln::serve {

struct StepPlan {
  // kHeartbeat: no batch; every other rank answers with heartbeat_ack (worker.h). Rank 0 sends
  // one when it has sent nothing for a while, so a silent rank 0 is noticed.
  enum class Kind : int32_t { kRun = 1, kShutdown = 2, kHeartbeat = 3 };
  Kind kind = Kind::kRun;
  Batch batch;  // kRun only; empty otherwise
  bool operator==(const StepPlan&) const = default;
};

// Layout: kind, n_spans, then per span in order: slot, flags (1 reset, 2 all_logits), n_pages,
// n_tokens, pages..., tokens... (a span's begin and pages_begin follow from the order).
std::vector<int32_t> encode_plan(const StepPlan& plan);
// Rejects a malformed encoding (truncated, unknown kind, negative counts, a span without tokens)
// with InvalidArgument.
StatusOr<StepPlan> decode_plan(const std::vector<int32_t>& words);

// Root: sends the plan to every rank of `control` (rank 0 is the root). Others: waits for the next
// plan without keeping a core busy (Communicator::broadcast_idle) and returns it. A malformed plan
// is a bug (KILN_CHECK).
void send_plan(Communicator& control, const StepPlan& plan);
StepPlan receive_plan(Communicator& control);

}  // namespace kiln::serve
