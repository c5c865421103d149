// Uploading one rank's weights to its GPU: every tensor is first given an offset in one
// allocation (so the total is known and allocated once), then filled row by row into a host
// staging buffer and copied on the rank's stream (cuda::copy_to_device), so the kernels queued
// there afterwards see the weights.
#include "shard/cuda_weights.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "kernels/base/check.h"

namespace kiln {
namespace {

constexpr int64_t kAlign = 256;  // every tensor starts on a 256-byte boundary

// Collects tensors (size + how to fill the bytes + where the device address goes), then
// allocates once and uploads them in order.
class Uploader {
 public:
  using Fill = std::function<void(std::byte* dst)>;
  using Place = std::function<void(const std::byte* device_address)>;

  void add(int64_t bytes, Fill fill, Place place) {
    items_.push_back({total_, bytes, std::move(fill), std::move(place)});
    total_ += (bytes + kAlign - 1) / kAlign * kAlign;
  }

  // A matrix in its stored dtype with packed rows.
  void add_matrix(const MatrixView& w, cuda::DeviceMatrix& dst) {
    if (w.data == nullptr || w.rows == 0) return;
    const int64_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
    dst = {w.dtype, nullptr, w.rows, w.cols, row_bytes};
    add(w.rows * row_bytes, [w, row_bytes](std::byte* out) { fill_rows(w, row_bytes, out); },
        [&dst](const std::byte* p) { dst.data = p; });
  }

  // E matrices of one shape and dtype back to back; dst describes the first, stride the step.
  Status add_experts(const std::vector<MatrixView>& ws, cuda::DeviceMatrix& dst, int64_t& stride,
                     const char* what) {
    const MatrixView& w0 = ws.front();
    for (const MatrixView& w : ws) {
      if (w.dtype != w0.dtype || w.rows != w0.rows || w.cols != w0.cols) {
        return unimplemented("the CUDA backend needs every routed expert's {} to share one dtype "
                             "and shape ({} [{}][{}] vs {} [{}][{}])",
                             what, dtype_name(w0.dtype), w0.rows, w0.cols, dtype_name(w.dtype),
                             w.rows, w.cols);
      }
    }
    const int64_t row_bytes = dtype_row_bytes(w0.dtype, w0.cols);
    stride = w0.rows * row_bytes;
    dst = {w0.dtype, nullptr, w0.rows, w0.cols, row_bytes};
    const int64_t step = stride;
    add(static_cast<int64_t>(ws.size()) * stride,
        [ws, row_bytes, step](std::byte* out) {
          for (size_t e = 0; e < ws.size(); ++e) {
            fill_rows(ws[e], row_bytes, out + static_cast<int64_t>(e) * step);
          }
        },
        [&dst](const std::byte* p) { dst.data = p; });
    return {};
  }

  void add_floats(const FloatView& v, const float*& dst) {
    if (v.empty()) return;
    const size_t bytes = static_cast<size_t>(v.size()) * sizeof(float);
    add(static_cast<int64_t>(bytes),
        [v, bytes](std::byte* out) { std::memcpy(out, v.data(), bytes); },
        [&dst](const std::byte* p) { dst = reinterpret_cast<const float*>(p); });
  }

  // Allocates and uploads everything on `stream` (synchronously: this is load time).
  Status commit(cudaStream_t stream, cuda::DeviceBuffer& storage) {
    KILN_ASSIGN_OR_RETURN(storage, cuda::DeviceBuffer::allocate(total_, "the model weights"));
    auto* base = storage.as<std::byte>();
    std::vector<std::byte> staging;
    for (Item& it : items_) {
      staging.resize(static_cast<size_t>(it.bytes));
      it.fill(staging.data());
      KILN_RETURN_IF_ERROR(cuda::copy_to_device(stream, base + it.offset, staging.data(),
                                                static_cast<size_t>(it.bytes))
                               .with_context("uploading the model weights"));
      it.place(base + it.offset);
    }
    return {};
  }

 private:
  // Copies the rows of a possibly strided view into packed rows.
  static void fill_rows(const MatrixView& w, int64_t row_bytes, std::byte* out) {
    for (int64_t r = 0; r < w.rows; ++r) {
      std::memcpy(out + r * row_bytes, w.row(r), static_cast<size_t>(row_bytes));
    }
  }

  struct Item {
    int64_t offset, bytes;
    Fill fill;
    Place place;
  };
  std::vector<Item> items_;
  int64_t total_ = 0;
};

void add_mlp(Uploader& up, const MlpWeights& w, CudaMlp& d) {
  up.add_matrix(w.gate, d.gate);
  up.add_matrix(w.up, d.up);
  up.add_matrix(w.down, d.down);
}

}  // namespace

StatusOr<std::unique_ptr<CudaWeights>> CudaWeights::upload(const cuda::Context& ctx,
                                                           const ModelConfig& c,
                                                           const ModelWeights& w) {
  auto d = std::make_unique<CudaWeights>();
  Uploader up;
  up.add_matrix(w.embed, d->embed);
  up.add_matrix(w.lm_head, d->lm_head);
  up.add_floats(w.final_norm, d->final_norm);
  d->layers.resize(w.layers.size());  // sized once: the uploader keeps addresses of its fields
  for (int64_t i = w.layers_loaded.begin; i < w.layers_loaded.end; ++i) {
    const LayerWeights& l = w.layers[static_cast<size_t>(i)];
    CudaLayer& dl = d->layers[static_cast<size_t>(i)];
    up.add_floats(l.attn_norm, dl.attn_norm);
    up.add_floats(l.ffn_norm, dl.ffn_norm);
    if (c.is_kda(i)) {
      const KdaWeights& k = l.kda;
      using Pair = std::pair<const MatrixView*, cuda::DeviceMatrix*>;
      for (auto [src, dst] : std::initializer_list<Pair>{
               {&k.q, &dl.q}, {&k.k, &dl.k}, {&k.v, &dl.v}, {&k.f_a, &dl.f_a}, {&k.f_b, &dl.f_b},
               {&k.b, &dl.b}, {&k.g_a, &dl.g_a}, {&k.g_b, &dl.g_b}, {&k.o, &dl.o}}) {
        up.add_matrix(*src, *dst);
      }
      up.add_floats(k.conv_q, dl.conv_q);
      up.add_floats(k.conv_k, dl.conv_k);
      up.add_floats(k.conv_v, dl.conv_v);
      up.add_floats(k.a_neg, dl.a_neg);
      up.add_floats(k.dt_bias, dl.dt_bias);
      up.add_floats(k.o_norm, dl.o_norm);
    } else {
      const MlaWeights& m = l.mla;
      const int64_t R = c.kv_lora_rank, P = c.qk_rope_head_dim;
      up.add_matrix(m.q, dl.mla_q);
      up.add_matrix(m.kv_a.slice_rows(0, R), dl.kv_latent);
      up.add_matrix(m.kv_a.slice_rows(R, P), dl.kv_pe);
      up.add_floats(m.kv_a_norm, dl.kv_a_norm);
      dl.k_b.resize(m.k_b.size());
      dl.v_b.resize(m.v_b.size());
      for (size_t h = 0; h < m.k_b.size(); ++h) up.add_matrix(m.k_b[h], dl.k_b[h]);
      for (size_t h = 0; h < m.v_b.size(); ++h) up.add_matrix(m.v_b[h], dl.v_b[h]);
      up.add_matrix(m.o, dl.mla_o);
    }
    if (c.is_moe(i)) {
      const MoeWeights& m = l.moe;
      up.add_matrix(m.router, dl.router);
      if (!m.bias.empty()) up.add_floats(m.bias, dl.router_bias);
      std::vector<MatrixView> gates, ups, downs;
      for (const MlpWeights& e : m.experts) {
        gates.push_back(e.gate);
        ups.push_back(e.up);
        downs.push_back(e.down);
      }
      CudaExperts& x = dl.experts;
      x.count = static_cast<int64_t>(m.experts.size());
      KILN_CHECK(x.count > 0);
      KILN_RETURN_IF_ERROR(up.add_experts(gates, x.first.gate, x.gate_stride, "gate_proj"));
      KILN_RETURN_IF_ERROR(up.add_experts(ups, x.first.up, x.up_stride, "up_proj"));
      KILN_RETURN_IF_ERROR(up.add_experts(downs, x.first.down, x.down_stride, "down_proj"));
      dl.has_shared = m.has_shared;
      if (m.has_shared) add_mlp(up, m.shared, dl.shared);
    } else {
      add_mlp(up, l.dense, dl.dense);
    }
  }
  KILN_RETURN_IF_ERROR(up.commit(ctx.stream(), d->storage));

  // The matrices cuda::matmul reads (routed experts go through grouped_matmul, no scratch).
  auto keep = [&](const cuda::DeviceMatrix& m) {
    if (m.data != nullptr) d->matrices.push_back(m);
  };
  keep(d->lm_head);
  for (const CudaLayer& l : d->layers) {
    for (const cuda::DeviceMatrix* m : {&l.q, &l.k, &l.v, &l.f_a, &l.f_b, &l.b, &l.g_a, &l.g_b,
                                        &l.o, &l.mla_q, &l.kv_latent, &l.kv_pe, &l.mla_o,
                                        &l.dense.gate, &l.dense.up, &l.dense.down, &l.router,
                                        &l.shared.gate, &l.shared.up, &l.shared.down}) {
      keep(*m);
    }
    for (const auto& m : l.k_b) keep(m);
    for (const auto& m : l.v_b) keep(m);
  }
  return d;
}

int64_t CudaWeights::max_matmul_scratch(int64_t n) const {
  int64_t most = 0;
  for (const cuda::DeviceMatrix& m : matrices) most = std::max(most, cuda::matmul_scratch_bytes(m, n));
  return most;
}

}  // namespace kiln
