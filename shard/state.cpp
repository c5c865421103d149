// StateCache: one allocation for all slots' KDA state and one for the pool of latent pages; the
// block tables say which pages hold a slot's positions.
#include "shard/state.h"

#include <algorithm>
#include <new>
#include <optional>
#include <string>

#include "kernels/base/check.h"
#include "kernels/base/checked_math.h"
#include "shard/memory_budget.h"

namespace kiln {

StateSizes StateSizes::from_config(const ModelConfig& c, Range layers) {
  if (layers.size() == 0) layers = {0, c.num_layers};
  StateSizes s;
  for (int64_t i = layers.begin; i < layers.end; ++i) (c.is_kda(i) ? s.n_kda_layers : s.n_mla_layers) += 1;
  s.conv_floats = 3 * (c.kda_conv_kernel - 1) * c.kda_proj_dim();
  s.recurrent_floats = c.kda_num_heads * c.kda_head_dim * c.kda_head_dim;
  s.latent_floats = c.mla_latent_dim();
  return s;
}

int64_t StateSizes::kda_bytes_per_slot() const {
  return n_kda_layers * (conv_floats + recurrent_floats) * 4;
}
int64_t StateSizes::mla_bytes_per_token() const { return n_mla_layers * latent_floats * 4; }

StateCache::StateCache(const ModelConfig& config, int64_t n_slots, int64_t n_pages,
                       int64_t page_tokens, Range layers)
    : StateCache(config, n_slots, n_pages, page_tokens, layers, StateStorage{}, nullptr) {}

StateCache::StateCache(const ModelConfig& config, int64_t n_slots, int64_t n_pages,
                       int64_t page_tokens, Range layers, StateStorage storage, Status* status)
    : sizes_(StateSizes::from_config(config, layers)),
      storage_(storage),
      n_slots_(n_slots),
      n_pages_(n_pages),
      page_tokens_(page_tokens) {
  KILN_CHECK(n_slots > 0 && n_pages >= 0 && n_pages <= INT32_MAX && page_tokens > 0);
  conv_chunk_ = (config.kda_conv_kernel - 1) * config.kda_proj_dim();
  kda_floats_ = n_slots * sizes_.n_kda_layers * (sizes_.conv_floats + sizes_.recurrent_floats);
  latent_floats_ = n_pages * sizes_.n_mla_layers * page_tokens * sizes_.latent_floats;
  tables_.resize(static_cast<size_t>(n_slots));
  lengths_.assign(static_cast<size_t>(n_slots), 0);
  if (storage.device == Device::kCpu) {
    host_.assign(static_cast<size_t>(kda_floats_ + latent_floats_), 0.0f);
    kda_ = host_.data();
    latent_ = host_.data() + kda_floats_;
    return;
  }
  KILN_CHECK(status != nullptr);
  if (storage.memory == nullptr) {
    *status = device_available(storage.device);
    KILN_CHECK_MSG(!status->ok(), "a device state cache needs the backend's DeviceMemory");
    return;
  }
  const int64_t bytes = (kda_floats_ + latent_floats_) * static_cast<int64_t>(sizeof(float));
  auto buf = storage.memory->allocate(
      bytes, fmt::format("the state cache ({} sequences: KDA state, {} MLA pages of {} tokens)",
                         n_slots, n_pages, page_tokens));
  if (!buf.ok()) {
    *status = buf.status();
    return;
  }
  device_ = std::move(buf).value();
  kda_ = static_cast<float*>(device_.get());
  latent_ = kda_ + kda_floats_;
  zero(kda_, kda_floats_ + latent_floats_);
}

StateCache::~StateCache() {
  if (device_ != nullptr) storage_.memory->synchronize();  // queued work may still use it
}

void StateCache::zero(float* p, int64_t n) {
  if (storage_.device == Device::kCpu) {
    std::fill_n(p, n, 0.0f);
    return;
  }
  storage_.memory->zero(p, n * static_cast<int64_t>(sizeof(float)));
}

StatusOr<uint64_t> StateCache::plan_bytes(const ModelConfig& config, int64_t n_slots,
                                           int64_t n_pages, int64_t page_tokens, Range layers) {
  if (n_slots <= 0 || page_tokens <= 0 || n_pages < 0 || n_pages > INT32_MAX) {
    return invalid_argument("state cache: {} sequences, {} pages of {} tokens: need sequences > 0, "
                            "tokens per page > 0 and 0..{} pages", n_slots, n_pages, page_tokens,
                            INT32_MAX);
  }
  const StateSizes s = StateSizes::from_config(config, layers);
  const auto u = [](int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(v, 0)); };
  std::optional<uint64_t> kda = checked_mul(u(n_slots), u(s.n_kda_layers));
  const std::optional<uint64_t> per_layer = checked_add(u(s.conv_floats), u(s.recurrent_floats));
  if (kda) kda = per_layer ? checked_mul(*kda, *per_layer) : std::nullopt;
  std::optional<uint64_t> mla = checked_mul(u(n_pages), u(s.n_mla_layers));
  if (mla) mla = checked_mul(*mla, u(page_tokens));
  if (mla) mla = checked_mul(*mla, u(s.latent_floats));
  std::optional<uint64_t> floats = kda && mla ? checked_add(*kda, *mla) : std::nullopt;
  std::optional<uint64_t> bytes = floats ? checked_mul(*floats, uint64_t{sizeof(float)}) : std::nullopt;
  if (!bytes || *bytes > static_cast<uint64_t>(INT64_MAX)) {
    return out_of_range("state cache: {} sequences and {} pages of {} tokens overflow 64-bit byte "
                        "counts", n_slots, n_pages, page_tokens);
  }
  return *bytes;
}

StatusOr<std::unique_ptr<StateCache>> StateCache::create(const ModelConfig& config,
                                                         int64_t n_slots, int64_t n_pages,
                                                         int64_t page_tokens, Range layers,
                                                         StateStorage storage) {
  KILN_ASSIGN_OR_RETURN(const uint64_t bytes,
                        plan_bytes(config, n_slots, n_pages, page_tokens, layers));
  const std::string what = fmt::format("the state cache ({} sequences, {} pages of {} tokens)",
                                       n_slots, n_pages, page_tokens);
  if (storage.device == Device::kCpu) KILN_RETURN_IF_ERROR(check_host_allocation(bytes, what));
  Status status;
  std::unique_ptr<StateCache> s;
  try {
    s.reset(new StateCache(config, n_slots, n_pages, page_tokens, layers, storage, &status));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: out of memory allocating {}", what, format_byte_count(bytes)));
  }
  if (!status.ok()) return status;
  return s;
}

std::unique_ptr<StateCache> StateCache::with_fixed_pages(const ModelConfig& config,
                                                         int64_t n_slots, int64_t max_context,
                                                         Range layers, int64_t page_tokens) {
  return std::move(create_fixed(config, n_slots, max_context, layers, page_tokens, {})).value();
}

StatusOr<std::unique_ptr<StateCache>> StateCache::create_fixed(const ModelConfig& config,
                                                               int64_t n_slots,
                                                               int64_t max_context, Range layers,
                                                               int64_t page_tokens,
                                                               StateStorage storage) {
  if (n_slots <= 0 || max_context <= 0 || page_tokens <= 0) {
    return invalid_argument("state cache: {} sequences of {} tokens: both must be > 0", n_slots,
                            max_context);
  }
  const int64_t per_slot = max_context / page_tokens + (max_context % page_tokens != 0 ? 1 : 0);
  const std::optional<int64_t> n_pages = checked_mul(n_slots, per_slot);
  if (!n_pages || *n_pages > INT32_MAX) {
    return invalid_argument("state cache: {} sequences of {} tokens need more than {} pages of {} "
                            "tokens", n_slots, max_context, INT32_MAX, page_tokens);
  }
  KILN_ASSIGN_OR_RETURN(auto s, create(config, n_slots, *n_pages, page_tokens, layers, storage));
  std::vector<int32_t> pages(static_cast<size_t>(per_slot));
  for (int64_t slot = 0; slot < n_slots; ++slot) {
    for (int64_t i = 0; i < per_slot; ++i) pages[i] = static_cast<int32_t>(slot * per_slot + i);
    s->append_pages(slot, pages);
  }
  s->fixed_pages_ = true;
  return s;
}

int64_t StateCache::bytes() const {
  return (kda_floats_ + latent_floats_) * static_cast<int64_t>(sizeof(float));
}

int64_t StateCache::kda_slot_floats() const {
  return sizes_.n_kda_layers * (sizes_.conv_floats + sizes_.recurrent_floats);
}

int64_t StateCache::latent_page_floats() const {
  return sizes_.n_mla_layers * page_tokens_ * sizes_.latent_floats;
}

float* StateCache::conv(int64_t slot, int64_t kda_index, int which) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && kda_index >= 0 && kda_index < sizes_.n_kda_layers);
  const int64_t per_layer = sizes_.conv_floats + sizes_.recurrent_floats;
  return kda_ + (slot * sizes_.n_kda_layers + kda_index) * per_layer + which * conv_chunk_;
}

float* StateCache::recurrent(int64_t slot, int64_t kda_index) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && kda_index >= 0 && kda_index < sizes_.n_kda_layers);
  const int64_t per_layer = sizes_.conv_floats + sizes_.recurrent_floats;
  return kda_ + (slot * sizes_.n_kda_layers + kda_index) * per_layer + sizes_.conv_floats;
}

float* StateCache::latent_page(int32_t page, int64_t mla_index) {
  KILN_CHECK(page >= 0 && page < n_pages_ && mla_index >= 0 && mla_index < sizes_.n_mla_layers);
  const int64_t rows = page_tokens_ * sizes_.latent_floats;
  return latent_ + (page * sizes_.n_mla_layers + mla_index) * rows;
}

const std::vector<int32_t>& StateCache::pages(int64_t slot) const {
  KILN_CHECK(slot >= 0 && slot < n_slots_);
  return tables_[static_cast<size_t>(slot)];
}

void StateCache::append_pages(int64_t slot, const std::vector<int32_t>& pages) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && !fixed_pages_);
  for (int32_t p : pages) {
    KILN_CHECK_MSG(p >= 0 && p < n_pages_,
                   "page " + std::to_string(p) + " of " + std::to_string(n_pages_));
  }
  std::vector<int32_t>& t = tables_[static_cast<size_t>(slot)];
  t.insert(t.end(), pages.begin(), pages.end());
}

int64_t StateCache::capacity(int64_t slot) const {
  return static_cast<int64_t>(pages(slot).size()) * page_tokens_;
}

void StateCache::reset(int64_t slot) {
  KILN_CHECK(slot >= 0 && slot < n_slots_);
  const int64_t per_slot = sizes_.n_kda_layers * (sizes_.conv_floats + sizes_.recurrent_floats);
  zero(kda_ + slot * per_slot, per_slot);
  lengths_[static_cast<size_t>(slot)] = 0;
  // clear() keeps the capacity, so reassigning pages does not allocate again.
  if (!fixed_pages_) tables_[static_cast<size_t>(slot)].clear();
}

}  // namespace kiln
