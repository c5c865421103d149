// StepPlan: what every rank runs in one engine step, decided by rank 0's scheduler and broadcast
// over the control communicator (architecture.md §1). Each sequence entry names its KDA slot,
// whether the slot starts a new sequence (state zeroed, block table emptied), the MLA pages
// appended to its block table, and the tokens to run. Encoded as little-endian int32 words.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/base/status.h"
#include "shard/communicator.h"

namespace kiln::serve {

struct PlanSeq {
  int32_t slot = 0;
  bool reset = false;       // new sequence: zero the slot's state and empty its block table first
  bool all_logits = false;  // logits for every token (prompt logprobs), else for the last one
  std::vector<int32_t> new_pages;  // appended to the slot's block table (after a reset)
  std::vector<int32_t> tokens;     // not empty
  bool operator==(const PlanSeq&) const = default;
};

struct StepPlan {
  // kHeartbeat: no sequences; every other rank answers with heartbeat_ack (worker.h). Rank 0
  // sends one when it has sent nothing for a while, so a silent rank 0 is noticed.
  enum class Kind : int32_t { kRun = 1, kShutdown = 2, kHeartbeat = 3 };
  Kind kind = Kind::kRun;
  std::vector<PlanSeq> seqs;
  int64_t n_tokens() const;
  bool operator==(const StepPlan&) const = default;
};

std::vector<int32_t> encode_plan(const StepPlan& plan);
// Rejects a malformed encoding (truncated, unknown kind, negative counts) with InvalidArgument.
StatusOr<StepPlan> decode_plan(const std::vector<int32_t>& words);

// Root: sends the plan to every rank of `control` (rank 0 is the root). Others: waits for the next
// plan without keeping a core busy (Communicator::broadcast_idle) and returns it. A malformed plan
// is a bug (KILN_CHECK).
void send_plan(Communicator& control, const StepPlan& plan);
StepPlan receive_plan(Communicator& control);

}  // namespace kiln::serve
