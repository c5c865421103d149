// Reference KDA (gate and the §3.2 recurrence, in double) and MLA attention (absorbed and
// expanded forms of kimi-linear.md §4), written straight from the formulas.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ref/ref.h"

namespace kiln::ref {

void kda_gate(float* f, int64_t T, int64_t H, int64_t K, const float* a_neg, const float* dt_bias) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t d = 0; d < K; ++d) {
        const int64_t c = h * K + d;
        const double x = double(f[t * H * K + c]) + dt_bias[c];
        const double sp = x > 20.0 ? x : std::log1p(std::exp(x));
        f[t * H * K + c] = float(a_neg[h] * sp);
      }
    }
  }
}

void kda_recurrent(const float* q, const float* k, const float* v, const float* g,
                   const float* beta, int64_t T, int64_t H, int64_t K, int64_t V, float* state,
                   float* o) {
  std::vector<double> S(size_t(K * V)), u(static_cast<size_t>(V));
  for (int64_t h = 0; h < H; ++h) {
    float* sh = state + h * K * V;
    std::copy(sh, sh + K * V, S.begin());
    for (int64_t t = 0; t < T; ++t) {
      const float* qt = q + (t * H + h) * K;
      const float* kt = k + (t * H + h) * K;
      const float* gt = g + (t * H + h) * K;
      const float* vt = v + (t * H + h) * V;
      const double b = beta[t * H + h];
      for (int64_t d = 0; d < K; ++d)  // S' = Diag(exp g) S: the decay scales key rows
        for (int64_t j = 0; j < V; ++j) S[size_t(d * V + j)] *= std::exp(double(gt[d]));
      for (int64_t j = 0; j < V; ++j) {  // u = v − S'ᵀ k
        double s = 0.0;
        for (int64_t d = 0; d < K; ++d) s += S[size_t(d * V + j)] * kt[d];
        u[size_t(j)] = vt[j] - s;
      }
      for (int64_t d = 0; d < K; ++d)  // S = S' + β k uᵀ
        for (int64_t j = 0; j < V; ++j) S[size_t(d * V + j)] += b * kt[d] * u[size_t(j)];
      for (int64_t j = 0; j < V; ++j) {  // o = Sᵀ q, after the write
        double s = 0.0;
        for (int64_t d = 0; d < K; ++d) s += S[size_t(d * V + j)] * qt[d];
        o[(t * H + h) * V + j] = float(s);
      }
    }
    for (int64_t i = 0; i < K * V; ++i) sh[i] = float(S[size_t(i)]);
  }
}

namespace {

// Causal softmax-weighted sum over positions [0, n): out[j] = Σ_τ p_τ · value(τ)[j].
template <class Score, class Value>
void attend(int64_t n, int64_t width, Score score, Value value, float* out) {
  std::vector<double> s(static_cast<size_t>(n));
  double mx = -INFINITY;
  for (int64_t tau = 0; tau < n; ++tau) mx = std::max(mx, s[size_t(tau)] = score(tau));
  double z = 0.0;
  for (auto& x : s) z += (x = std::exp(x - mx));
  for (int64_t j = 0; j < width; ++j) {
    double acc = 0.0;
    for (int64_t tau = 0; tau < n; ++tau) acc += s[size_t(tau)] * value(tau, j);
    out[j] = float(acc / z);
  }
}

}  // namespace

void mla_attention_absorbed(const float* q, int64_t T, int64_t H, int64_t R, int64_t P,
                            const float* const* pages, int64_t page_tokens, int64_t pos0,
                            float scale, float* out) {
  const int64_t W = R + P;
  auto row = [&](int64_t tau) { return pages[tau / page_tokens] + (tau % page_tokens) * W; };
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = q + (t * H + h) * W;
      auto score = [&](int64_t tau) {
        double s = 0.0;
        for (int64_t i = 0; i < W; ++i) s += double(qh[i]) * row(tau)[i];
        return s * scale;
      };
      auto value = [&](int64_t tau, int64_t j) { return double(row(tau)[j]); };
      attend(pos0 + t + 1, R, score, value, out + (t * H + h) * R);
    }
  }
}

void mla_attention_expanded(const float* q_nope, const float* q_pe, int64_t T, int64_t H,
                            int64_t N, int64_t P, const float* cache, int64_t R,
                            const float* w_uk, const float* w_uv, int64_t V, int64_t pos0,
                            float scale, float* out) {
  const int64_t W = R + P, n_ctx = pos0 + T;
  // Decompressed per-head keys kn = W_UK c and values v = W_UV c for every cached position.
  std::vector<double> kn(size_t(n_ctx * H * N)), vv(size_t(n_ctx * H * V));
  for (int64_t tau = 0; tau < n_ctx; ++tau) {
    const float* c = cache + tau * W;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < N; ++i) {
        double s = 0.0;
        for (int64_t r = 0; r < R; ++r) s += double(w_uk[(h * N + i) * R + r]) * c[r];
        kn[size_t((tau * H + h) * N + i)] = s;
      }
      for (int64_t j = 0; j < V; ++j) {
        double s = 0.0;
        for (int64_t r = 0; r < R; ++r) s += double(w_uv[(h * V + j) * R + r]) * c[r];
        vv[size_t((tau * H + h) * V + j)] = s;
      }
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* qn = q_nope + (t * H + h) * N;
      const float* qp = q_pe + (t * H + h) * P;
      auto score = [&](int64_t tau) {
        double s = 0.0;
        for (int64_t i = 0; i < N; ++i) s += qn[i] * kn[size_t((tau * H + h) * N + i)];
        for (int64_t i = 0; i < P; ++i) s += double(qp[i]) * cache[tau * W + R + i];
        return s * scale;
      };
      auto value = [&](int64_t tau, int64_t j) { return vv[size_t((tau * H + h) * V + j)]; };
      attend(pos0 + t + 1, V, score, value, out + (t * H + h) * V);
    }
  }
}

}  // namespace kiln::ref
