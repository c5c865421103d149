// CudaWeights: one rank's share of the weights in device memory, uploaded once from the host
// views (ModelWeights) into a single allocation. Matrices keep their stored dtype (f32, f16,
// bf16, q8_0, q4_k, q6_k) with packed rows, so the GPU reads the file's bytes. A layer's routed
// experts are packed back to back so the grouped expert kernel addresses expert e at a fixed
// stride. Small vectors are f32.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "shard/weights.h"

namespace kiln {

struct CudaMlp {
  cuda::DeviceMatrix gate, up, down;
};

// Experts of one MoE layer: expert e's gate/up/down at the expert-0 matrices + e · stride bytes.
struct CudaExperts {
  CudaMlp first;
  int64_t gate_stride = 0, up_stride = 0, down_stride = 0;
  int64_t count = 0;
};

struct CudaLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  // KDA
  cuda::DeviceMatrix q, k, v, f_a, f_b, b, g_a, g_b, o;
  const float *conv_q = nullptr, *conv_k = nullptr, *conv_v = nullptr;
  const float *a_neg = nullptr, *dt_bias = nullptr, *o_norm = nullptr;
  // MLA: kv_a split into the latent rows [0, R) and the k_pe rows [R, R+P)
  cuda::DeviceMatrix mla_q, kv_latent, kv_pe, mla_o;
  const float* kv_a_norm = nullptr;
  std::vector<cuda::DeviceMatrix> k_b, v_b;  // per head
  // FFN
  CudaMlp dense;
  cuda::DeviceMatrix router;
  const float* router_bias = nullptr;  // null when absent
  CudaExperts experts;
  bool has_shared = false;
  CudaMlp shared;
};

struct CudaWeights {
  cuda::DeviceBuffer storage;        // every tensor below lives in it
  cuda::DeviceMatrix embed, lm_head;
  const float* final_norm = nullptr;
  std::vector<CudaLayer> layers;     // [num_layers]; filled for the rank's layers

  // Uploads the rank's share (the layers in weights.layers_loaded) in the order of ctx's stream.
  // Errors: ResourceExhausted when the device cannot hold it; Unimplemented for experts of mixed
  // dtypes or shapes; Unavailable when a copy fails.
  static StatusOr<std::unique_ptr<CudaWeights>> upload(const cuda::Context& ctx,
                                                       const ModelConfig& shard_config,
                                                       const ModelWeights& weights);
  // The largest matmul scratch any of these weights needs for n tokens (cuda::matmul).
  int64_t max_matmul_scratch(int64_t n) const;

  std::vector<cuda::DeviceMatrix> matrices;  // every matrix above that cuda::matmul reads
};

}  // namespace kiln
