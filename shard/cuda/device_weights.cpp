// Uploading one rank's weights to its GPU: every tensor is first given an offset in one
// allocation (so the total is known and allocated once), then filled row by row into a host
// staging buffer and copied on the rank's stream (cuda::copy_to_device), so the kernels queued
// there afterwards see the weights.
#include "shard/cuda/device_weights.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/base/check.h"
#include "shard/tensor_table.h"

namespace kiln {
namespace {

constexpr int64_t kAlign = 256;  // every tensor starts on a 256-byte boundary

// Collects tensors (size + how to fill the bytes + where the device address goes), then
// allocates once and uploads them in order. The destinations must not move until commit().
class Uploader {
 public:
  using Fill = std::function<void(std::byte* dst)>;
  using Place = std::function<void(const std::byte* device_address)>;

  // A matrix in its stored dtype with packed rows; `matmul`: read by cuda::matmul. `dst` may be
  // the view `w` was copied from.
  void matrix(const MatrixView w, MatrixView& dst, bool matmul = true) {
    if (w.data == nullptr || w.rows == 0) return;
    const int64_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
    dst = {w.dtype, nullptr, w.rows, w.cols, row_bytes};
    add(w.rows * row_bytes, [w, row_bytes](std::byte* out) { fill_rows(w, row_bytes, out); },
        [&dst](const std::byte* p) { dst.data = p; });
    if (matmul) matmuls_.push_back(&dst);
  }

  void floats(const FloatView v, FloatView& dst) {
    if (v.empty()) return;
    const size_t bytes = static_cast<size_t>(v.size()) * sizeof(float);
    dst.n = v.size();
    add(static_cast<int64_t>(bytes),
        [v, bytes](std::byte* out) { std::memcpy(out, v.data(), bytes); },
        [&dst](const std::byte* p) { dst.ptr = reinterpret_cast<const float*>(p); });
  }

  // One matrix of every routed expert, of one shape and dtype, back to back (each view is
  // re-pointed to its expert's place); `what` names the tensor in the error.
  Status experts(const std::vector<MatrixView*>& dst, const std::string& what) {
    std::vector<MatrixView> views;
    for (const MatrixView* m : dst) views.push_back(*m);
    const MatrixView w0 = views.front();
    for (const MatrixView& w : views) {
      if (w.dtype != w0.dtype || w.rows != w0.rows || w.cols != w0.cols) {
        return unimplemented("the CUDA backend needs every routed expert's {} to share one dtype "
                             "and shape ({} [{}][{}] vs {} [{}][{}])",
                             what, dtype_name(w0.dtype), w0.rows, w0.cols, dtype_name(w.dtype),
                             w.rows, w.cols);
      }
    }
    const int64_t row_bytes = dtype_row_bytes(w0.dtype, w0.cols), stride = w0.rows * row_bytes;
    add(static_cast<int64_t>(views.size()) * stride,
        [views, row_bytes, stride](std::byte* out) {
          for (size_t e = 0; e < views.size(); ++e) {
            fill_rows(views[e], row_bytes, out + static_cast<int64_t>(e) * stride);
          }
        },
        [dst, w0, row_bytes, stride](const std::byte* p) {
          for (size_t e = 0; e < dst.size(); ++e) {
            *dst[e] = {w0.dtype, p + static_cast<int64_t>(e) * stride, w0.rows, w0.cols,
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

// Every tensor of the rank's share, host → device view, walked by the tensor table: the device
// ModelWeights starts as a copy of the host views (its layers sized once, so the uploader may
// keep the fields' addresses) and each view is re-pointed into the allocation. A routed expert
// entry's views arrive expert by expert and are packed at a fixed stride.
Status walk(Uploader& up, const ModelConfig& c, const ModelWeights& h, ModelWeights& d) {
  d.embed = h.embed;
  d.lm_head = h.lm_head;
  d.final_norm = h.final_norm;
  d.vocab = h.vocab;
  d.layers_loaded = h.layers_loaded;
  d.layers = h.layers;
  Status status;
  std::vector<MatrixView*> experts;
  for_each_weight(
      d, c,
      [&](const TensorSpec& s, int64_t layer, int64_t, MatrixView& m) {
        if (s.stack != Stack::kExperts) {
          up.matrix(m, m, /*matmul=*/s.block != Block::kEmbedding);
          return;
        }
        experts.push_back(&m);
        if (experts.size() < d.layers[static_cast<size_t>(layer)].moe.experts.size()) return;
        if (status.ok()) status = up.experts(experts, s.name(false, layer));
        experts.clear();
      },
      [&](const TensorSpec&, int64_t, FloatView& f) { up.floats(f, f); });
  return status;
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
