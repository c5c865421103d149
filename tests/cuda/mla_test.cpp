// MLA on the GPU (kernels/cuda/mla.cu): write_latent fills a paged pool (pages in shuffled
// order, padded page stride, NaN in every row it must not touch) exactly as the host-side copy
// does; mla_attention_absorbed matches cpu::mla_attention_absorbed for several spans with
// pos0 > 0 (their history written through write_latent first), an empty span and a long
// context, page sizes {1, 7, 16, 64}, (R, P) ∈ {(512, 64) (the model's kv_lora_rank and rope
// dims), (256, 64), (32, 16)}, H ∈ {1, 16}.
// Tolerances: write_latent is a copy (bitwise); attention NMSE ≤ 1e-7 (f32, online softmax vs
// two-pass) and |err| ≤ 1e-4 on outputs of magnitude O(1).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/mla.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

struct Seq {
  int32_t slot, pos0, n;
};

// Sequences of one batch: decode-like single rows, a prefill chunk, an empty span, a long past.
const std::vector<Seq> kSeqs = {{2, 5, 3}, {0, 0, 1}, {3, 9, 0}, {1, 40, 4}, {4, 70, 1},
                                {5, 300, 2}};

// The page pool and tables for kSeqs: each sequence owns ceil((pos0 + n) / page_tokens) pages,
// taken from a shuffled list of page ids (two spare pages stay unused).
struct PagedPool {
  int64_t W, page_tokens, page_stride;
  std::vector<int32_t> tables, table_offsets;
  int64_t n_pages = 0;
  PagedPool(int64_t W_, int64_t page_tokens_)
      : W(W_), page_tokens(page_tokens_), page_stride(page_tokens_ * W_ + 5) {
    int64_t need = 0;
    for (const Seq& s : kSeqs) need += (s.pos0 + s.n + page_tokens - 1) / page_tokens;
    n_pages = need + 2;
    std::vector<int32_t> ids(static_cast<size_t>(n_pages));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(static_cast<unsigned>(page_tokens)));
    size_t next = 0;
    for (const Seq& s : kSeqs) {
      table_offsets.push_back(static_cast<int32_t>(tables.size()));
      for (int64_t p = 0; p < (s.pos0 + s.n + page_tokens - 1) / page_tokens; ++p) {
        tables.push_back(ids[next++]);
      }
    }
  }
  int64_t floats() const { return n_pages * page_stride; }
  // Row `pos` of sequence i in a pool laid out as this one.
  float* row(std::vector<float>& pool, size_t i, int64_t pos) const {
    const int32_t page = tables[size_t(table_offsets[i] + pos / page_tokens)];
    return pool.data() + page * page_stride + (pos % page_tokens) * W;
  }
};

// The batch's spans over kSeqs: every sequence's past rows [0, pos0) (history), or its n
// current rows from pos0.
std::vector<cuda::Span> make_spans(bool history) {
  std::vector<cuda::Span> spans;
  int32_t begin = 0;
  for (const Seq& s : kSeqs) {
    const int32_t pos0 = history ? 0 : s.pos0, n = history ? s.pos0 : s.n;
    spans.push_back({s.slot, pos0, begin, n});
    begin += n;
  }
  return spans;
}

void check_case(int64_t H, int64_t R, int64_t P, int64_t page_tokens) {
  cuda::Context& ctx = *test::gpu_context();
  const int64_t W = R + P;
  const std::string what =
      fmt::format("H={} R={} P={} page_tokens={}", H, R, P, page_tokens);
  const PagedPool layout(W, page_tokens);
  const auto hist_spans = make_spans(true), cur_spans = make_spans(false);
  const int64_t n_hist = hist_spans.back().begin + hist_spans.back().n;
  const int64_t n_rows = cur_spans.back().begin + cur_spans.back().n;
  const auto hist_kv = random_vec(size_t(n_hist * W), 11, -2, 2);
  const auto kv = random_vec(size_t(n_rows * W), 12, -2, 2);
  const auto q = random_vec(size_t(n_rows * H * W), 13, -0.5f, 0.5f);
  const float scale = 1.0f / std::sqrt(float(W));

  // The pool the writes must produce; NaN everywhere else.
  std::vector<float> want_pool(size_t(layout.floats()), NAN);
  for (size_t i = 0; i < kSeqs.size(); ++i) {
    for (int64_t p = 0; p < kSeqs[i].pos0 + kSeqs[i].n; ++p) {
      const float* src = p < kSeqs[i].pos0
                             ? hist_kv.data() + (hist_spans[i].begin + p) * W
                             : kv.data() + (cur_spans[i].begin + p - kSeqs[i].pos0) * W;
      std::copy_n(src, W, layout.row(want_pool, i, p));
    }
  }

  auto pool = test::to_device(std::vector<float>(size_t(layout.floats()), NAN));
  const auto tables = test::to_device(layout.tables);
  const auto offsets = test::to_device(layout.table_offsets);
  const cuda::LatentPages pages{pool.get(), layout.page_stride, page_tokens, tables.get(),
                                offsets.get()};
  const auto d_hist_spans = test::to_device(hist_spans), d_cur_spans = test::to_device(cur_spans);
  const auto d_hist_kv = test::to_device(hist_kv), d_kv = test::to_device(kv);
  const auto n_spans = static_cast<int64_t>(kSeqs.size());
  cuda::write_latent(ctx, d_hist_kv.get(), d_hist_spans.get(), n_spans, n_hist, W, pages);
  cuda::write_latent(ctx, d_kv.get(), d_cur_spans.get(), n_spans, n_rows, W, pages);
  const auto got_pool = test::to_host(pool);
  EXPECT_EQ(std::memcmp(got_pool.data(), want_pool.data(), got_pool.size() * sizeof(float)), 0)
      << what << ": write_latent pool differs";

  const auto d_q = test::to_device(q);
  auto d_out = test::to_device(std::vector<float>(size_t(n_rows * H * R), NAN));
  cuda::mla_attention_absorbed(ctx, d_q.get(), d_cur_spans.get(), n_spans, n_rows, H, R, P,
                               pages, scale, d_out.get());
  const auto got = test::to_host(d_out);

  cpu::ThreadPool threads(2);
  std::vector<float> want(got.size(), 0.0f);
  for (size_t i = 0; i < kSeqs.size(); ++i) {
    const Seq& s = kSeqs[i];
    if (s.n == 0) continue;
    std::vector<const float*> seq_pages;
    for (int64_t p = 0; p < s.pos0 + s.n; p += page_tokens) {
      seq_pages.push_back(layout.row(want_pool, i, p));  // row p is the start of a page
    }
    const int64_t begin = cur_spans[i].begin;
    cpu::mla_attention_absorbed(threads, q.data() + begin * H * W, s.n, H, R, P,
                                seq_pages.data(), page_tokens, s.pos0, scale,
                                want.data() + begin * H * R);
  }
  expect_close(got, want, 1e-7, 1e-4, what);
}

TEST(CudaMla, WriteLatentAndAbsorbedAttentionMatchCpu) {
  KILN_REQUIRE_GPU();
  for (const int64_t H : {1, 16}) {
    for (const auto& [R, P] : {std::pair<int64_t, int64_t>{512, 64}, std::pair<int64_t, int64_t>{256, 64},
                               std::pair<int64_t, int64_t>{32, 16}}) {
      for (const int64_t page_tokens : {1, 7, 16, 64}) check_case(H, R, P, page_tokens);
    }
  }
}

}  // namespace
}  // namespace kiln
