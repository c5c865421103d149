// KDA's short causal depthwise convolution followed by SiLU, for one sequence.
#pragma once

#include <cstdint>

namespace kiln::cpu {

// For t in [0, T), channel c in [0, C):
//   y[t][c] = SiLU( Σ_{j<K} w[c][j] · in(t − (K−1) + j)[c] )
// where in(s) = x[s] for s ≥ 0 and state[K−1+s][c] for s < 0 (state holds the K−1 previous
// pre-conv inputs, oldest first). Tap K−1 multiplies the current token.
// Afterwards state holds the last K−1 inputs (from state and x together).
// x: [T] rows of C with stride x_stride (floats); y: [T][C] with stride y_stride; w: [C][K] f32;
// state: [K−1][C]. y must not alias x.
void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w,
                        int K, float* state, float* y, int64_t y_stride);

}  // namespace kiln::cpu
