// Per-sequence state of one rank: KDA slots (conv windows + fp32 recurrent state per KDA layer)
// and the MLA latent cache (one [c | k_pe] row per token per MLA layer). Sizes are computed from
// the config and allocated once; a slot is zeroed when assigned to a new sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/base/device.h"
#include "kernels/base/status.h"
#include "shard/config.h"
#include "shard/partition.h"

namespace kiln {

// Device memory for state caches, provided by a device backend: one allocation, zeroing queued
// in the order of the backend's work, and a wait for that work.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // `bytes` of device memory, freed when the owner goes; ResourceExhausted naming `what`.
  virtual StatusOr<std::shared_ptr<void>> allocate(int64_t bytes,
                                                   const std::string& what) const = 0;
  virtual void zero(void* p, int64_t bytes) const = 0;
  virtual void synchronize() const = 0;
};

// Where a cache keeps its floats: host memory, or a device backend's memory.
struct StateStorage {
  Device device = Device::kCpu;
  std::shared_ptr<const DeviceMemory> memory;  // with a device
};

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

// The latent cache is a pool of fixed-size pages shared by all slots; each slot has a block table
// (page ids in position order). Page p holds, for every MLA layer of this rank, the latent rows of
// page_tokens consecutive positions. Page ids are the same on every rank (each rank holds the
// same number of pages for its own layers), so rank 0's scheduler assigns them for all ranks.
class StateCache {
 public:
  // config gives this rank's head counts (KimiLinearModel::shard_config()); only the KDA/MLA
  // layers in `layers` get state (all layers when empty), indexed in layer order.
  // Paged: n_pages pages of page_tokens tokens, no page assigned to any slot.
  StateCache(const ModelConfig& config, int64_t n_slots, int64_t n_pages, int64_t page_tokens,
             Range layers);
  // Bytes of the storage such a cache holds (checked arithmetic): InvalidArgument for counts out
  // of range (page ids are int32), OutOfRange when the byte count overflows.
  static StatusOr<uint64_t> plan_bytes(const ModelConfig& config, int64_t n_slots, int64_t n_pages,
                                       int64_t page_tokens, Range layers);
  // The same in `storage` (device memory is allocated once, here): ResourceExhausted naming the
  // bytes when the host's available memory (CPU) or the device cannot hold it; nothing is
  // allocated then.
  static StatusOr<std::unique_ptr<StateCache>> create(const ModelConfig& config, int64_t n_slots,
                                                      int64_t n_pages, int64_t page_tokens,
                                                      Range layers, StateStorage storage = {});
  // Static: every slot owns ceil(max_context / page_tokens) pages from the start (for tools and
  // tests that run fixed sequences: eval, generate, bench).
  static std::unique_ptr<StateCache> with_fixed_pages(const ModelConfig& config, int64_t n_slots,
                                                      int64_t max_context, Range layers = {},
                                                      int64_t page_tokens = 64);
  static StatusOr<std::unique_ptr<StateCache>> create_fixed(const ModelConfig& config,
                                                            int64_t n_slots, int64_t max_context,
                                                            Range layers, int64_t page_tokens,
                                                            StateStorage storage);
  ~StateCache();
  StateCache(const StateCache&) = delete;
  StateCache& operator=(const StateCache&) = delete;

  const StateStorage& storage() const { return storage_; }

  int64_t n_slots() const { return n_slots_; }
  int64_t n_pages() const { return n_pages_; }
  int64_t page_tokens() const { return page_tokens_; }
  const StateSizes& sizes() const { return sizes_; }
  int64_t bytes() const;

  // The pointers below are device pointers when the storage is on a device.
  // which: 0 = q, 1 = k, 2 = v. Returns [taps−1][H*K], oldest row first.
  float* conv(int64_t slot, int64_t kda_index, int which);
  float* recurrent(int64_t slot, int64_t kda_index);   // [H][K][V]
  // Rows [page_tokens][R+P] of one page for one MLA layer.
  float* latent_page(int32_t page, int64_t mla_index);
  // Floats between the same KDA layer's state of consecutive slots, and between consecutive
  // pages of the same MLA layer (batched device kernels address every slot from slot 0's).
  int64_t kda_slot_floats() const;
  int64_t latent_page_floats() const;
  // The slot's block table; positions [i·page_tokens, (i+1)·page_tokens) live in pages(slot)[i].
  const std::vector<int32_t>& pages(int64_t slot) const;
  // Appends pages to the slot's table (ids checked in range).
  void append_pages(int64_t slot, const std::vector<int32_t>& pages);
  // Tokens the slot can hold: pages(slot).size() × page_tokens.
  int64_t capacity(int64_t slot) const;
  // Number of tokens already processed by the slot's sequence.
  int64_t length(int64_t slot) const { return lengths_[slot]; }
  void set_length(int64_t slot, int64_t n) { lengths_[slot] = n; }
  // Zeroes the slot's KDA state and length; a paged cache also empties its block table (a
  // static one keeps its pages). Latent rows are overwritten as tokens arrive.
  void reset(int64_t slot);

 private:
  StateCache(const ModelConfig& config, int64_t n_slots, int64_t n_pages, int64_t page_tokens,
             Range layers, StateStorage storage, Status* status);
  void zero(float* p, int64_t n);

  StateSizes sizes_;
  StateStorage storage_;
  int64_t n_slots_ = 0, n_pages_ = 0, page_tokens_ = 0;
  bool fixed_pages_ = false;
  int64_t conv_chunk_ = 0;   // taps−1 × H*K
  int64_t kda_floats_ = 0, latent_floats_ = 0;
  float* kda_ = nullptr;     // [slot][kda layer][conv q,k,v | recurrent]
  float* latent_ = nullptr;  // [page][mla layer][page_tokens][R+P]
  std::vector<float> host_;  // the storage on the CPU: kda_ then latent_
  std::shared_ptr<void> device_;  // the device allocation (owner), when on a device
  std::vector<std::vector<int32_t>> tables_;
  std::vector<int64_t> lengths_;
};

}  // namespace kiln
