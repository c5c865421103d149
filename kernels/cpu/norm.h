// Normalisations, all in fp32: RMSNorm (plain and fused with the residual add), the per-head L2
// norm of KDA's q/k, and KDA's gated RMSNorm with a sigmoid gate.
#pragma once

#include <cstdint>

namespace kiln::cpu {

// y[r] = w ⊙ x[r] / sqrt(mean(x[r]²) + eps) for n_rows rows of `dim` (contiguous rows).
// y may alias x.
void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps, float* y);

// h[r] += delta[r]; then y[r] = rms_norm(h[r]). h: [n_rows][dim], delta/y likewise.
void add_rms_norm(float* h, const float* delta, const float* w, int64_t n_rows, int64_t dim,
                  float eps, float* y);

// In place, per row of `dim`: x = scale · x / sqrt(Σx² + eps)  (FLA's form).
void l2_norm(float* x, int64_t n_rows, int64_t dim, float eps, float scale);

// KDA output norm: y[r][j] = w[j] · o[r][j] / sqrt(mean(o[r]²) + eps) · σ(z[r][j]).
// Rows are (token, head) pairs of `dim` = value head dim; w is shared by all rows.
void gated_rms_norm_sigmoid(const float* o, const float* z, const float* w, int64_t n_rows,
                            int64_t dim, float eps, float* y);

}  // namespace kiln::cpu
