// DeviceWeights: one rank's share of the weights in device memory, uploaded once from the host
// views into a single allocation, described by a ModelWeights of the same shape whose views are
// device pointers. Matrices keep their stored dtype (f32, f16, bf16, q8_0, q4_k, q6_k) with packed
// rows, so the GPU reads the file's bytes. A layer's routed experts are packed back to back, so
// expert e's gate/up/down sit at expert 0's + e · expert_stride (the grouped expert kernel
// addresses them so). Small vectors are f32.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "shard/weights.h"

namespace kiln {

// A device view as the CUDA kernels take it.
inline cuda::DeviceMatrix device_matrix(const MatrixView& w) {
  return {w.dtype, w.data, w.rows, w.cols, w.row_stride};
}

// Bytes from expert 0's matrix to expert 1's (0 with one expert): the packing's fixed stride.
int64_t expert_stride(const std::vector<MlpWeights>& experts, MatrixView MlpWeights::*which);

struct DeviceWeights {
  cuda::DeviceBuffer storage;  // every tensor below lives in it
  ModelWeights weights;        // views into storage
  std::vector<MatrixView> matmul_weights;  // the ones cuda::matmul reads (not routed experts)

  // Uploads the rank's share (the layers in host.layers_loaded) in the order of ctx's stream.
  // Errors: ResourceExhausted when the device cannot hold it; Unimplemented for experts of mixed
  // dtypes or shapes; Unavailable when a copy fails.
  static StatusOr<std::unique_ptr<DeviceWeights>> upload(const cuda::Context& ctx,
                                                         const ModelConfig& shard_config,
                                                         const ModelWeights& host);
  // The largest matmul scratch any of these weights needs for n tokens (cuda::matmul).
  int64_t max_matmul_scratch(int64_t n) const;
};

}  // namespace kiln
