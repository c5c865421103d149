// StateCache: one allocation for all slots' KDA state and MLA latent rows.
#include "shard/state.h"

#include <algorithm>

#include "kernels/base/check.h"

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

StateCache::StateCache(const ModelConfig& config, int64_t n_slots, int64_t max_context,
                       Range layers)
    : sizes_(StateSizes::from_config(config, layers)), n_slots_(n_slots), max_context_(max_context) {
  KILN_CHECK(n_slots > 0 && max_context > 0);
  conv_chunk_ = (config.kda_conv_kernel - 1) * config.kda_proj_dim();
  kda_.assign(static_cast<size_t>(n_slots * sizes_.n_kda_layers *
                                  (sizes_.conv_floats + sizes_.recurrent_floats)), 0.0f);
  latent_.assign(static_cast<size_t>(n_slots * sizes_.n_mla_layers * max_context *
                                     sizes_.latent_floats), 0.0f);
  lengths_.assign(static_cast<size_t>(n_slots), 0);
}

int64_t StateCache::bytes() const {
  return static_cast<int64_t>((kda_.size() + latent_.size()) * sizeof(float));
}

float* StateCache::conv(int64_t slot, int64_t kda_index, int which) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && kda_index < sizes_.n_kda_layers);
  const int64_t per_layer = sizes_.conv_floats + sizes_.recurrent_floats;
  return kda_.data() + (slot * sizes_.n_kda_layers + kda_index) * per_layer + which * conv_chunk_;
}

float* StateCache::recurrent(int64_t slot, int64_t kda_index) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && kda_index < sizes_.n_kda_layers);
  const int64_t per_layer = sizes_.conv_floats + sizes_.recurrent_floats;
  return kda_.data() + (slot * sizes_.n_kda_layers + kda_index) * per_layer + sizes_.conv_floats;
}

float* StateCache::latent(int64_t slot, int64_t mla_index) {
  KILN_CHECK(slot >= 0 && slot < n_slots_ && mla_index < sizes_.n_mla_layers);
  return latent_.data() +
         (slot * sizes_.n_mla_layers + mla_index) * max_context_ * sizes_.latent_floats;
}

void StateCache::reset(int64_t slot) {
  KILN_CHECK(slot >= 0 && slot < n_slots_);
  const int64_t per_slot = sizes_.n_kda_layers * (sizes_.conv_floats + sizes_.recurrent_floats);
  std::fill_n(kda_.begin() + slot * per_slot, per_slot, 0.0f);
  lengths_[slot] = 0;
}

}  // namespace kiln
