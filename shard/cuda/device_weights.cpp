// Uploading one rank's weights to its GPU: every tensor is first given an offset in one
// allocation (so the total is known and allocated once), then filled row by row into a host
// staging buffer and copied on the rank's stream (cuda::copy_to_device), so the kernels queued
// there afterwards see the weights.
#include "shard/cuda/device_weights.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "kernels/base/check.h"

namespace kiln {
namespace {

constexpr int64_t kAlign = 256;  // every tensor starts on a 256-byte boundary

// Collects tensors (size + how to fill the bytes + where the device address goes), then
// allocates once and uploads them in order. The destinations must not move until commit().
class Uploader {
 public:
  using Fill = std::function<void(std::byte* dst)>;
  using Place = std::function<void(const std::byte* device_address)>;

  // A matrix in its stored dtype with packed rows; `matmul`: read by cuda::matmul.
  void matrix(const MatrixView& w, MatrixView& dst, bool matmul = true) {
    if (w.data == nullptr || w.rows == 0) return;
    const int64_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
    dst = {w.dtype, nullptr, w.rows, w.cols, row_bytes};
    add(w.rows * row_bytes, [w, row_bytes](std::byte* out) { fill_rows(w, row_bytes, out); },
        [&dst](const std::byte* p) { dst.data = p; });
    if (matmul) matmuls_.push_back(&dst);
  }

  void floats(const FloatView& v, FloatView& dst) {
    if (v.empty()) return;
    const size_t bytes = static_cast<size_t>(v.size()) * sizeof(float);
    dst.n = v.size();
    add(static_cast<int64_t>(bytes),
        [v, bytes](std::byte* out) { std::memcpy(out, v.data(), bytes); },
        [&dst](const std::byte* p) { dst.ptr = reinterpret_cast<const float*>(p); });
  }

  // One matrix (`which`) of every routed expert, of one shape and dtype, back to back.
  Status experts(const std::vector<MlpWeights>& src, std::vector<MlpWeights>& dst,
                 MatrixView MlpWeights::*which, const char* what) {
    const MatrixView& w0 = src.front().*which;
    for (const MlpWeights& e : src) {
      const MatrixView& w = e.*which;
      if (w.dtype != w0.dtype || w.rows != w0.rows || w.cols != w0.cols) {
        return unimplemented("the CUDA backend needs every routed expert's {} to share one dtype "
                             "and shape ({} [{}][{}] vs {} [{}][{}])",
                             what, dtype_name(w0.dtype), w0.rows, w0.cols, dtype_name(w.dtype),
                             w.rows, w.cols);
      }
    }
    const int64_t row_bytes = dtype_row_bytes(w0.dtype, w0.cols), stride = w0.rows * row_bytes;
    std::vector<MatrixView> views;
    for (const MlpWeights& e : src) views.push_back(e.*which);
    add(static_cast<int64_t>(src.size()) * stride,
        [views, row_bytes, stride](std::byte* out) {
          for (size_t e = 0; e < views.size(); ++e) {
            fill_rows(views[e], row_bytes, out + static_cast<int64_t>(e) * stride);
          }
        },
        [&dst, which, w0, row_bytes, stride](const std::byte* p) {
          for (size_t e = 0; e < dst.size(); ++e) {
            dst[e].*which = {w0.dtype, p + static_cast<int64_t>(e) * stride, w0.rows, w0.cols,
                             row_bytes};
          }
        });
    return {};
  }

  // Allocates and uploads everything on `stream` (synchronously: this is load time).
  Status commit(cudaStream_t stream, cuda::DeviceBuffer& storage,
                std::vector<MatrixView>& matmuls) {
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
    for (const MatrixView* m : matmuls_) matmuls.push_back(*m);
    return {};
  }

 private:
  void add(int64_t bytes, Fill fill, Place place) {
    items_.push_back({total_, bytes, std::move(fill), std::move(place)});
    total_ += (bytes + kAlign - 1) / kAlign * kAlign;
  }
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
  std::vector<const MatrixView*> matmuls_;
  int64_t total_ = 0;
};

void mlp(Uploader& up, const MlpWeights& w, MlpWeights& d) {
  up.matrix(w.gate, d.gate);
  up.matrix(w.up, d.up);
  up.matrix(w.down, d.down);
}

// Every tensor of the rank's share, host → device view (the one walk over ModelWeights' fields).
Status walk(Uploader& up, const ModelConfig& c, const ModelWeights& h, ModelWeights& d) {
  up.matrix(h.embed, d.embed, /*matmul=*/false);
  up.matrix(h.lm_head, d.lm_head);
  up.floats(h.final_norm, d.final_norm);
  d.layers.resize(h.layers.size());  // sized once: the uploader keeps addresses of its fields
  for (int64_t i = h.layers_loaded.begin; i < h.layers_loaded.end; ++i) {
    const LayerWeights& l = h.layers[static_cast<size_t>(i)];
    LayerWeights& dl = d.layers[static_cast<size_t>(i)];
    up.floats(l.attn_norm, dl.attn_norm);
    up.floats(l.ffn_norm, dl.ffn_norm);
    if (c.is_kda(i)) {
      const KdaWeights& k = l.kda;
      KdaWeights& dk = dl.kda;
      for (MatrixView KdaWeights::*m : {&KdaWeights::q, &KdaWeights::k, &KdaWeights::v,
                                        &KdaWeights::f_a, &KdaWeights::f_b, &KdaWeights::b,
                                        &KdaWeights::g_a, &KdaWeights::g_b, &KdaWeights::o}) {
        up.matrix(k.*m, dk.*m);
      }
      for (FloatView KdaWeights::*f : {&KdaWeights::conv_q, &KdaWeights::conv_k,
                                       &KdaWeights::conv_v, &KdaWeights::a_neg,
                                       &KdaWeights::dt_bias, &KdaWeights::o_norm}) {
        up.floats(k.*f, dk.*f);
      }
    } else {
      const MlaWeights& m = l.mla;
      MlaWeights& dm = dl.mla;
      up.matrix(m.q, dm.q);
      up.matrix(m.kv_a, dm.kv_a);
      up.floats(m.kv_a_norm, dm.kv_a_norm);
      dm.k_b.resize(m.k_b.size());
      dm.v_b.resize(m.v_b.size());
      for (size_t hd = 0; hd < m.k_b.size(); ++hd) up.matrix(m.k_b[hd], dm.k_b[hd]);
      for (size_t hd = 0; hd < m.v_b.size(); ++hd) up.matrix(m.v_b[hd], dm.v_b[hd]);
      up.matrix(m.o, dm.o);
    }
    if (!c.is_moe(i)) {
      mlp(up, l.dense, dl.dense);
      continue;
    }
    const MoeWeights& m = l.moe;
    MoeWeights& dm = dl.moe;
    up.matrix(m.router, dm.router);
    up.floats(m.bias, dm.bias);
    KILN_CHECK(!m.experts.empty());
    dm.experts.resize(m.experts.size());
    KILN_RETURN_IF_ERROR(up.experts(m.experts, dm.experts, &MlpWeights::gate, "gate_proj"));
    KILN_RETURN_IF_ERROR(up.experts(m.experts, dm.experts, &MlpWeights::up, "up_proj"));
    KILN_RETURN_IF_ERROR(up.experts(m.experts, dm.experts, &MlpWeights::down, "down_proj"));
    dm.has_shared = m.has_shared;
    if (m.has_shared) mlp(up, m.shared, dm.shared);
  }
  d.vocab = h.vocab;
  d.layers_loaded = h.layers_loaded;
  return {};
}

}  // namespace

int64_t expert_stride(const std::vector<MlpWeights>& experts, MatrixView MlpWeights::*which) {
  if (experts.size() < 2) return 0;
  const int64_t stride = (experts[1].*which).data - (experts[0].*which).data;
  KILN_CHECK((experts.back().*which).data ==
             (experts[0].*which).data + stride * static_cast<int64_t>(experts.size() - 1));
  return stride;
}

StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::upload(const cuda::Context& ctx,
                                                               const ModelConfig& c,
                                                               const ModelWeights& host) {
  auto d = std::make_unique<DeviceWeights>();
  Uploader up;
  KILN_RETURN_IF_ERROR(walk(up, c, host, d->weights));
  KILN_RETURN_IF_ERROR(up.commit(ctx.stream(), d->storage, d->matmul_weights));
  return d;
}

int64_t DeviceWeights::max_matmul_scratch(int64_t n) const {
  int64_t most = 0;
  for (const MatrixView& m : matmul_weights) {
    most = std::max(most, cuda::matmul_scratch_bytes(device_matrix(m), n));
  }
  return most;
}

}  // namespace kiln
