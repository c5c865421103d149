// Backend: the forward pass's ops, one signature each, over pointers in the backend's memory
// (host memory for CpuBackend, device memory for the CUDA backend). The model and the blocks are
// written once against it; each backend implements every op with its own kernels (kernels/cpu,
// kernels/cuda). Not here: collectives (the parallel layers call the Communicator on backend
// memory) and the choice of backend (make_backend, the one device switch of the forward).
//
// A forward is begin() followed by ops over the batch begin() arranged: the rows a backend
// processes, their order (the CPU puts decode spans first; CUDA keeps batch order) and the
// sequences' spans are its own. Ops that take no row count run over all rows of that batch.
// Thread safety: one forward at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/base/device.h"
#include "kernels/base/matrix.h"
#include "kernels/base/status.h"
#include "kernels/cpu/thread_pool.h"
#include "shard/batch.h"
#include "shard/config.h"
#include "shard/partition.h"
#include "shard/state.h"
#include "shard/weights.h"

namespace kiln {

namespace cuda {
class Context;
}

// One sequence's part of the arranged batch: rows [begin, begin + n) are positions
// [pos0, pos0 + n) of the sequence held in state slot `slot`.
struct SeqSpan {
  int64_t slot = 0;
  int64_t pos0 = 0;
  int64_t begin = 0;
  int64_t n = 0;
};

// A batch as a backend runs it: its spans in row order, the token ids of those rows, and the
// rows whose logits are returned, in output order (the Batch's span order).
struct BatchRows {
  std::vector<SeqSpan> spans;
  std::vector<int32_t> ids;
  std::vector<int32_t> out_rows;
  int64_t n_decode = 0;  // with decode_first: rows [0, n_decode) belong to decode spans
  std::vector<size_t> span_at;  // the batch's span i is spans[span_at[i]]
  int64_t n_tokens() const { return static_cast<int64_t>(ids.size()); }
};

// Spans of at most this many tokens (decode steps, short prompts) are decode spans: the CPU
// backend places their rows first and takes them through the integer path of quantised matmuls
// (cpu::matmul's int8_tokens), so a token's arithmetic depends only on its own span.
inline constexpr int64_t kDecodeSpanMax = 4;

// Fills `rows` from a validated batch whose pages are applied: decode_first puts the decode spans
// first, each group in batch order; otherwise rows keep batch order. Positions continue from
// state.length(slot). Reuses rows' storage.
void arrange_batch(const Batch& batch, const StateCache& state, bool decode_first,
                   BatchRows& rows);

// The workspace: named buffers, sized for T rows by workspace_floats (both backends use it; the
// CPU grows each buffer on demand, the CUDA backend carves them all from one allocation).
enum class Buf : int {
  kHidden, kNormed, kDelta,  // [T][D]: residual stream, normed block input, block output
  // KDA (C = H·K)
  kKdaProj,   // [T][3C] q̂ k̂ v̂ side by side, then q, k, v [T][C] each
  kKdaConv,   // [T][3C] conv outputs
  kKdaLow,    // [T][rank] low-rank activations (f_a, then g_a)
  kKdaGate,   // [T][C] log decay
  kKdaZ,      // [T][C] output gate logits
  kKdaBeta,   // [T][H]
  kKdaCore,   // [T][C] core output, then gated-normed
  // MLA (L = R + P)
  kMlaQ,         // [T][H][N+P]
  kMlaLatent,    // [T][L] [c | k_pe]
  kMlaAbsorbed,  // [T][H][L] absorbed queries
  kMlaAttended,  // [T][H][R]
  kMlaHeads,     // [T][H][V]
  // FFN
  kFfnGate, kFfnUp,  // [T][F] (F: the larger of the dense and shared-expert slices)
  kMoeLogits,        // [T][E] router logits
  kMoeWeights,       // [T][k] routing weights
  kMoeIds,           // [T][k] int32 expert of each assignment
  kMoeOrder,         // [T·k] int32 assignments grouped by expert
  kMoeOffsets,       // [E+1] int32
  kMoeRouted,        // [T·k][D] routed expert outputs, one row per assignment
  kMoeGate, kMoeUp,  // [T·k][Fe] (grouped expert kernels)
  // LM head (rows: at most T)
  kLogitsLocal,     // [T][vocab slice] (TP > 1)
  kLogitsGathered,  // [T][vocab] rank-major (TP > 1)
  kLogits,          // [T][vocab] the output in a device's memory
  kCount
};

// What sizes the workspace besides the shard config.
struct WorkspaceShape {
  ModelConfig shard;       // this rank's head counts and FFN slices
  int64_t ffn_rows = 0;    // max(dense FFN slice, shared-expert slice)
  int64_t vocab_local = 0;  // this rank's vocab rows
  int64_t vocab = 0;
  bool tensor_parallel = false;
};
// Floats (4-byte words) of buffer b for batches of up to T rows.
int64_t workspace_floats(const WorkspaceShape& s, Buf b, int64_t T);

// The routed-expert part of a MoE layer (kimi-linear.md §5).
struct MoeRouting {
  int64_t n_experts = 0;
  int k = 0;  // experts per token
  bool renormalize = true;
  float scale = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  // The rank's weights in this backend's memory (the host views themselves on the CPU).
  virtual const ModelWeights& weights() const = 0;
  // Bytes of weights resident in device memory (0 on the CPU: file mappings).
  virtual int64_t weight_bytes() const = 0;
  // Where state caches for this backend live.
  virtual StateStorage state_storage() const = 0;
  // Sizes the workspace for batches of up to max_tokens rows (a device allocates it here).
  virtual Status reserve(int64_t max_tokens) = 0;

  // Starts a forward over `batch` (validated, pages applied): arranges its rows (rows()) and,
  // on a device, copies them in. InvalidArgument for a KDA chunk the backend cannot run.
  virtual Status begin(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
                       int64_t kda_chunk) = 0;
  const BatchRows& rows() const { return rows_; }
  // Buffer b for the current batch's rows (valid until the next begin()).
  virtual float* buffer(Buf b) = 0;
  int32_t* int_buffer(Buf b) { return reinterpret_cast<int32_t*>(buffer(b)); }

  // ---- dense math over the batch's T rows ----
  // y[t][:] = w · x[t] for every row t; strides in floats.
  virtual void matmul(const MatrixView& w, const float* x, int64_t x_stride, float* y,
                      int64_t y_stride) = 0;
  // Rows of dim = w.size(): y = w ⊙ x / rms(x). y may alias x.
  virtual void rms_norm(const float* x, int64_t x_stride, const FloatView& w, float eps, float* y,
                        int64_t y_stride) = 0;
  // h += delta; x = rms_norm(h), rows of dim w.size().
  virtual void add_rms_norm(float* h, const float* delta, const FloatView& w, float eps,
                            float* x) = 0;
  // y = w ⊙ o / rms(o) ⊙ σ(z) per row of `dim`, n_rows rows; y may alias o.
  virtual void gated_rms_norm_sigmoid(const float* o, const float* z, const FloatView& w,
                                      int64_t n_rows, int64_t dim, float eps, float* y) = 0;
  virtual void silu_mul(const float* gate, const float* up, int64_t n, float* out) = 0;
  virtual void add(float* y, const float* x, int64_t n) = 0;  // y += x
  virtual void fill_zero(float* y, int64_t n) = 0;
  // dst[r][c] = src[r][c] for r < rows, c < cols; strides in floats.
  virtual void copy2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                      int64_t rows, int64_t cols) = 0;

  // ---- KDA ----
  // For every span: the causal conv + SiLU of its rows of x (row stride `stride`, C channels at
  // column offset `which`·C of both x and y), advancing the slot's conv state `which`.
  virtual void causal_conv(StateCache& state, int64_t kda_index, int which, const float* x,
                           int64_t stride, int64_t C, const FloatView& w, float* y) = 0;
  // The KDA gate: conv outputs qkv [T][3C] → q (L2-normed, scaled K^-1/2), k (L2-normed), v,
  // each [T][C]; g in place = a_neg · softplus(g + dt_bias); beta in place = σ(beta).
  virtual void kda_prepare(const float* qkv, int64_t H, int64_t K, const FloatView& a_neg,
                           const FloatView& dt_bias, float* q, float* k, float* v, float* g,
                           float* beta) = 0;
  // The delta-rule core for every span (recurrent for one-token spans, chunked otherwise).
  virtual void kda_core(StateCache& state, int64_t kda_index, const float* q, const float* k,
                        const float* v, const float* g, const float* beta, int64_t H, int64_t K,
                        float* o) = 0;

  // ---- MLA ----
  // Writes each span's latent rows kv [T][L] to its positions in the slot's pages.
  virtual void mla_write_latent(StateCache& state, int64_t mla_index, const float* kv,
                                int64_t L) = 0;
  // Absorbed MQA over the latent pages (written first): q [T][H][R+P] → out [T][H][R].
  virtual void mla_attention(StateCache& state, int64_t mla_index, const float* q, int64_t H,
                             int64_t R, int64_t P, float scale, float* out) = 0;

  // ---- MoE ----
  // out[t] += Σ over the k experts chosen from logits [T][E] (bias: selection only) of
  // weight · expert(x[t]); x: [T][D]. Each expert's weights are read once.
  virtual void moe_experts(const MoeWeights& w, const MoeRouting& r, const float* logits,
                           const float* x, float* out) = 0;

  // ---- embedding and head ----
  // h[t] = table row (id − vocab.begin) for ids in `vocab`, zeros for the others.
  virtual void embed(const MatrixView& table, Range vocab, float* h) = 0;
  // y [out rows][w.rows] = w · rms_norm(h[out row]) for the batch's output rows, in output order.
  virtual void lm_head(const MatrixView& w, const FloatView& norm, float eps, const float* h,
                       float* y) = 0;

  // ---- host transfers ----
  // n floats in backend memory whose contents to_host moves into host (resized to n): host
  // itself on the CPU, a workspace buffer on a device.
  virtual float* output(std::vector<float>& host, int64_t n) = 0;
  // host[n] ← src[n] (waits for the queued work; nothing is copied when src is host).
  virtual void to_host(const float* src, int64_t n, float* host) = 0;
  // A host copy of n floats at p for reading until the next call (p itself on the CPU).
  virtual const float* host_view(const float* p, int64_t n) = 0;

 protected:
  BatchRows rows_;
};

// Everything a backend is made from. weights: the rank's host views (outlive the backend);
// gpu: the CUDA context to run on (null: the backend opens device 0).
struct BackendOptions {
  Device device = Device::kCpu;
  cuda::Context* gpu = nullptr;
  const ModelWeights* weights = nullptr;
  WorkspaceShape shape;
};
// The one switch between backends. A build without CUDA returns device_available's error for
// kCuda. Errors from a device: no device, out of memory for the weights.
StatusOr<std::unique_ptr<Backend>> make_backend(const BackendOptions& options);

}  // namespace kiln
