// StateCache: block tables and capacity of paged and fixed-page caches, the latent page layout,
// reset (a paged slot loses its pages, a fixed one keeps them; KDA state and length zeroed, other
// slots untouched), bytes(), layer ranges, and the checks on page and slot ids.
#include "shard/state.h"

#include <set>

#include <gtest/gtest.h>

namespace kiln {
namespace {

// The micro preset's shape: 8 layers, MLA at 3 and 7; latent rows of 32 + 16 floats.
ModelConfig micro_config() {
  ModelConfig c;
  c.vocab_size = 640, c.hidden_size = 128, c.num_layers = 8;
  c.kda_num_heads = 4, c.kda_head_dim = 32, c.kda_conv_kernel = 4, c.kda_gate_rank = 32;
  c.mla_num_heads = 4, c.kv_lora_rank = 32, c.qk_nope_head_dim = 32, c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.layer_kinds.assign(8, LayerKind::kKda);
  c.layer_kinds[3] = c.layer_kinds[7] = LayerKind::kMla;
  return c;
}

TEST(StateCache, PagedCacheStartsWithoutPages) {
  StateCache s(micro_config(), 3, 10, 16, {});
  EXPECT_EQ(s.n_slots(), 3);
  EXPECT_EQ(s.n_pages(), 10);
  EXPECT_EQ(s.page_tokens(), 16);
  for (int64_t slot = 0; slot < 3; ++slot) {
    EXPECT_TRUE(s.pages(slot).empty());
    EXPECT_EQ(s.capacity(slot), 0);
    EXPECT_EQ(s.length(slot), 0);
  }
}

TEST(StateCache, BlockTablesGrowInTheOrderGiven) {
  StateCache s(micro_config(), 2, 10, 16, {});
  s.append_pages(1, {7, 2});
  s.append_pages(1, {9});
  s.append_pages(0, {0});
  EXPECT_EQ(s.pages(1), (std::vector<int32_t>{7, 2, 9}));
  EXPECT_EQ(s.capacity(1), 48);
  EXPECT_EQ(s.pages(0), (std::vector<int32_t>{0}));
  EXPECT_EQ(s.capacity(0), 16);
  s.append_pages(0, {});
  EXPECT_EQ(s.capacity(0), 16);
}

// Layout [page][mla layer][page_tokens][R+P]: every (page, layer) has its own rows.
TEST(StateCache, LatentPagesAreDisjoint) {
  const ModelConfig c = micro_config();
  StateCache s(c, 1, 5, 3, {});
  const int64_t L = c.mla_latent_dim(), rows = 3 * L;
  ASSERT_EQ(s.sizes().n_mla_layers, 2);
  ASSERT_EQ(s.sizes().latent_floats, L);
  const float* base = s.latent_page(0, 0);
  std::set<const float*> seen;
  for (int32_t p = 0; p < 5; ++p) {
    for (int64_t m = 0; m < 2; ++m) {
      const float* page = s.latent_page(p, m);
      EXPECT_EQ(page - base, (p * 2 + m) * rows) << "page " << p << " layer " << m;
      seen.insert(page);
    }
  }
  EXPECT_EQ(seen.size(), 10u);
  // The last row of the last page is writable memory of the cache.
  s.latent_page(4, 1)[rows - 1] = 1.0f;
  EXPECT_EQ(base[5 * 2 * rows - 1], 1.0f);
}

TEST(StateCache, FixedPagesCoverTheContext) {
  const ModelConfig c = micro_config();
  auto s = StateCache::with_fixed_pages(c, 3, 100, {}, 16);  // 7 pages per slot
  EXPECT_EQ(s->n_pages(), 21);
  std::set<int32_t> all;
  for (int64_t slot = 0; slot < 3; ++slot) {
    EXPECT_EQ(s->pages(slot).size(), 7u);
    EXPECT_EQ(s->capacity(slot), 112);
    all.insert(s->pages(slot).begin(), s->pages(slot).end());
  }
  EXPECT_EQ(all.size(), 21u);  // no page shared between slots
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 20);
  auto exact = StateCache::with_fixed_pages(c, 1, 64);  // default 64-token pages
  EXPECT_EQ(exact->page_tokens(), 64);
  EXPECT_EQ(exact->capacity(0), 64);
  auto one = StateCache::with_fixed_pages(c, 1, 5, {}, 1);
  EXPECT_EQ(one->pages(0), (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

// Writes a recognisable value into every KDA float of the slot.
void fill_kda(StateCache& s, int64_t slot, float v) {
  const StateSizes& z = s.sizes();
  for (int64_t i = 0; i < z.n_kda_layers; ++i) {
    for (int which = 0; which < 3; ++which) {
      std::fill_n(s.conv(slot, i, which), z.conv_floats / 3, v);
    }
    std::fill_n(s.recurrent(slot, i), z.recurrent_floats, v);
  }
}

bool kda_all(StateCache& s, int64_t slot, float v) {
  const StateSizes& z = s.sizes();
  for (int64_t i = 0; i < z.n_kda_layers; ++i) {
    for (int which = 0; which < 3; ++which) {
      const float* p = s.conv(slot, i, which);
      for (int64_t j = 0; j < z.conv_floats / 3; ++j) {
        if (p[j] != v) return false;
      }
    }
    const float* r = s.recurrent(slot, i);
    for (int64_t j = 0; j < z.recurrent_floats; ++j) {
      if (r[j] != v) return false;
    }
  }
  return true;
}

TEST(StateCache, ResetZeroesKdaAndEmptiesAPagedTable) {
  StateCache s(micro_config(), 2, 8, 4, {});
  ASSERT_EQ(s.sizes().n_kda_layers, 6);
  s.append_pages(0, {3, 1});
  s.append_pages(1, {5});
  fill_kda(s, 0, 1.5f);
  fill_kda(s, 1, 2.5f);
  s.set_length(0, 7);
  s.set_length(1, 2);
  s.reset(0);
  EXPECT_TRUE(kda_all(s, 0, 0.0f));
  EXPECT_EQ(s.length(0), 0);
  EXPECT_TRUE(s.pages(0).empty());
  EXPECT_EQ(s.capacity(0), 0);
  // The other slot is untouched.
  EXPECT_TRUE(kda_all(s, 1, 2.5f));
  EXPECT_EQ(s.length(1), 2);
  EXPECT_EQ(s.pages(1), (std::vector<int32_t>{5}));
  // The slot takes new pages after a reset.
  s.append_pages(0, {3});
  EXPECT_EQ(s.capacity(0), 4);
}

TEST(StateCache, ResetKeepsFixedPages) {
  auto s = StateCache::with_fixed_pages(micro_config(), 2, 10, {}, 4);
  const std::vector<int32_t> before = s->pages(1);
  fill_kda(*s, 1, 3.0f);
  s->set_length(1, 9);
  s->reset(1);
  EXPECT_TRUE(kda_all(*s, 1, 0.0f));
  EXPECT_EQ(s->length(1), 0);
  EXPECT_EQ(s->pages(1), before);
  EXPECT_EQ(s->capacity(1), 12);
}

TEST(StateCache, BytesCountKdaSlotsAndLatentPages) {
  const ModelConfig c = micro_config();
  const StateSizes z = StateSizes::from_config(c);
  StateCache s(c, 3, 10, 16, {});
  EXPECT_EQ(s.bytes(), 3 * z.kda_bytes_per_slot() + 10 * 16 * z.mla_bytes_per_token());
  EXPECT_EQ(z.kda_bytes_per_slot(), 6 * (3 * 3 * 128 + 4 * 32 * 32) * 4);
  EXPECT_EQ(z.mla_bytes_per_token(), 2 * 48 * 4);
  StateCache empty(c, 1, 0, 16, {});  // a pool with no pages holds only KDA state
  EXPECT_EQ(empty.bytes(), z.kda_bytes_per_slot());
  auto fixed = StateCache::with_fixed_pages(c, 2, 20, {}, 8);  // 3 pages per slot
  EXPECT_EQ(fixed->bytes(), 2 * z.kda_bytes_per_slot() + 6 * 8 * z.mla_bytes_per_token());
}

// A pipeline stage holds state only for its layers: layers [3, 7) have one MLA layer (3).
TEST(StateCache, LayerRangeSizesTheStage) {
  const ModelConfig c = micro_config();
  StateCache s(c, 1, 2, 4, Range{3, 7});
  EXPECT_EQ(s.sizes().n_mla_layers, 1);
  EXPECT_EQ(s.sizes().n_kda_layers, 3);
  EXPECT_EQ(s.bytes(), s.sizes().kda_bytes_per_slot() + 2 * 4 * c.mla_latent_dim() * 4);
}

using StateCacheDeathTest = ::testing::Test;

TEST_F(StateCacheDeathTest, ChecksPageAndSlotIds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  StateCache s(micro_config(), 2, 4, 8, {});
  EXPECT_DEATH(s.append_pages(0, {4}), "check failed.*page 4 of 4");
  EXPECT_DEATH(s.append_pages(0, {-1}), "check failed.*page -1 of 4");
  EXPECT_DEATH(s.append_pages(2, {0}), "check failed");
  EXPECT_DEATH(s.latent_page(4, 0), "check failed");
  EXPECT_DEATH(s.latent_page(0, 2), "check failed");
  EXPECT_DEATH(s.pages(-1), "check failed");
  EXPECT_DEATH(s.reset(2), "check failed");
  EXPECT_DEATH(s.recurrent(0, 6), "check failed");
  auto fixed = StateCache::with_fixed_pages(micro_config(), 1, 8, {}, 8);
  EXPECT_DEATH(fixed->append_pages(0, {0}), "check failed");  // its pages are all assigned
}

// Sizes that come from keys or files are planned with checked arithmetic and compared with the
// host's available memory before anything is allocated: errors, not aborts or bad_alloc.
TEST(StateCache, HugeGeometriesAreErrorsBeforeAllocating) {
  const ModelConfig c = micro_config();
  // Page ids are int32.
  auto too_many = StateCache::create(c, 1, int64_t{INT32_MAX} + 1, 16, {});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  // INT32_MAX pages of 4096 tokens: 2^31 x 4096 x 2 layers x 48 floats x 4 B = 3 PiB.
  auto no_room = StateCache::create(c, 16, INT32_MAX, 4096, {});
  ASSERT_FALSE(no_room.ok());
  EXPECT_EQ(no_room.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(no_room.status().message().find(
                "the state cache (16 sequences, 2147483647 pages of 4096 tokens) needs 3.00 PiB"),
            std::string::npos) << no_room.status().message();
  auto planned = StateCache::plan_bytes(c, 16, INT32_MAX, 4096, {});
  ASSERT_TRUE(planned.ok());
  EXPECT_EQ(*planned, uint64_t{INT32_MAX} * 4096 * 2 * 48 * 4 + 16 * 6 * (3 * 3 * 128 + 4 * 32 * 32) * 4);
  // A byte count that wraps 64 bits.
  auto wraps = StateCache::plan_bytes(c, 16, INT32_MAX, int64_t{1} << 40, {});
  ASSERT_FALSE(wraps.ok());
  EXPECT_EQ(wraps.status().code(), StatusCode::kOutOfRange);
  // Fixed pages: slots x ceil(context / page) past int32, and a context near INT64_MAX.
  EXPECT_FALSE(StateCache::create_fixed(c, 65536, int64_t{1} << 40, {}, 64, {}).ok());
  EXPECT_FALSE(StateCache::create_fixed(c, 1, INT64_MAX, {}, 64, {}).ok());
  EXPECT_FALSE(StateCache::create_fixed(c, 0, 16, {}, 64, {}).ok());
}

}  // namespace
}  // namespace kiln
