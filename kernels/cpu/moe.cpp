// MoE routing: sigmoid scores, bias for selection only, top-k (ties to the lower expert index),
// weights from the unbiased scores, optional renormalisation, scale (kimi-linear.md §5).
#include "kernels/cpu/moe.h"

#include <cmath>

#include "kernels/base/check.h"

namespace kiln::cpu {
namespace {

constexpr int kMaxTopK = 64;

}  // namespace

void moe_route(const float* logits, int64_t T, int64_t n_experts, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights) {
  KILN_CHECK(k >= 1 && k <= kMaxTopK && k <= n_experts);
  float sel[kMaxTopK];  // selection scores of the current best k, descending
  for (int64_t t = 0; t < T; ++t) {
    const float* lt = logits + t * n_experts;
    int32_t* it = ids + t * k;
    float* wt = weights + t * k;
    int n_sel = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const float p = 1.0f / (1.0f + std::exp(-lt[e]));
      const float s = bias ? p + bias[e] : p;
      if (n_sel == k && !(s > sel[k - 1])) continue;  // ties keep the earlier (lower) index
      int pos = n_sel < k ? n_sel++ : k - 1;
      for (; pos > 0 && s > sel[pos - 1]; --pos) {
        sel[pos] = sel[pos - 1];
        it[pos] = it[pos - 1];
        wt[pos] = wt[pos - 1];
      }
      sel[pos] = s;
      it[pos] = static_cast<int32_t>(e);
      wt[pos] = p;
    }
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += wt[i];
    // 1e-20 as in the HF reference: guards an all-zero selection without changing real sums.
    const float mul = renormalize ? scale / (sum + 1e-20f) : scale;
    for (int i = 0; i < k; ++i) wt[i] *= mul;
  }
}

}  // namespace kiln::cpu
