// Per-sequence state of one rank: KDA slots (conv windows + fp32 recurrent state per KDA layer)
// and the MLA latent cache (one [c | k_pe] row per token per MLA layer). Sizes are computed from
// the config and allocated once; a slot is zeroed when assigned to a new sequence.
// The latent cache is contiguous per slot ([max_context] rows); paging comes with the scheduler.
#pragma once

#include <cstdint>
#include <vector>

#include "shard/config.h"
#include "shard/partition.h"

namespace kiln {

struct StateSizes {
  int64_t conv_floats = 0;       // per KDA layer: 3 × [taps−1][H*K] (q, k, v)
  int64_t recurrent_floats = 0;  // per KDA layer: [H][K][V]
  int64_t latent_floats = 0;     // per MLA layer per token: R + P
  int64_t kda_bytes_per_slot() const;      // all KDA layers
  int64_t mla_bytes_per_token() const;     // all MLA layers
  // Sizes for the layers in `layers` (all layers when empty).
  static StateSizes from_config(const ModelConfig& c, Range layers = {});
  int64_t n_kda_layers = 0, n_mla_layers = 0;
};

class StateCache {
 public:
  // config gives this rank's head counts (KimiLinearModel::shard_config()); only the KDA/MLA
  // layers in `layers` get state (all layers when empty), indexed in layer order.
  StateCache(const ModelConfig& config, int64_t n_slots, int64_t max_context, Range layers = {});

  int64_t n_slots() const { return n_slots_; }
  int64_t max_context() const { return max_context_; }
  const StateSizes& sizes() const { return sizes_; }
  int64_t bytes() const;

  // which: 0 = q, 1 = k, 2 = v. Returns [taps−1][H*K], oldest row first.
  float* conv(int64_t slot, int64_t kda_index, int which);
  float* recurrent(int64_t slot, int64_t kda_index);   // [H][K][V]
  float* latent(int64_t slot, int64_t mla_index);      // [max_context][R+P]
  // Number of tokens already processed by the slot's sequence.
  int64_t length(int64_t slot) const { return lengths_[slot]; }
  void set_length(int64_t slot, int64_t n) { lengths_[slot] = n; }
  // Zeroes the slot's KDA state and length (the latent rows are overwritten as tokens arrive).
  void reset(int64_t slot);

 private:
  StateSizes sizes_;
  int64_t n_slots_, max_context_;
  int64_t conv_chunk_ = 0;   // taps−1 × H*K
  std::vector<float> kda_;     // [slot][kda layer][conv q,k,v | recurrent]
  std::vector<float> latent_;  // [slot][mla layer][max_context][R+P]
  std::vector<int64_t> lengths_;
};

}  // namespace kiln
