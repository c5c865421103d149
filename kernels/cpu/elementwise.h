// Small fused element-wise ops over contiguous fp32 arrays. silu_mul and sigmoid_inplace give
// each element the same bits whatever its index and n (batch invariance).
#pragma once

#include <cstdint>

namespace kiln::cpu {

// out[i] = SiLU(gate[i]) * up[i]; out may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
// y[i] += a * x[i]
void axpy(float a, const float* x, int64_t n, float* y);
// x[i] = σ(x[i])
void sigmoid_inplace(float* x, int64_t n);

}  // namespace kiln::cpu
