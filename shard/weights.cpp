// Maps HF and GGUF tensor names onto ModelWeights, checking every shape.
#include "shard/weights.h"

#include "shard/parallel_layers.h"
#include "shard/tensor_table.h"

#include <cmath>
#include <cstring>
#include <unordered_set>

#include <fmt/format.h>

namespace kiln {
namespace {

class Loader {
 public:
  explicit Loader(const Checkpoint& ck) : ck_(ck) {}

  StatusOr<const TensorRef*> get(const std::string& name) const {
    const TensorRef* t = ck_.find(name);
    if (t == nullptr) return not_found("{}: missing tensor '{}'", ck_.path(), name);
    return t;
  }

  Status check_shape(const TensorRef& t, const std::vector<int64_t>& expected) const {
    TensorRef e;
    e.shape = expected;
    if (t.squeezed() != e.squeezed()) {
      return invalid_argument("{}: tensor '{}' has shape {} but the config implies {}", ck_.path(),
                              t.name, shape_string(t.shape), shape_string(expected));
    }
    return {};
  }

  // A [rows][cols] matrix (a GGUF {cols, rows}).
  StatusOr<MatrixView> matrix(const std::string& name, int64_t rows, int64_t cols) const {
    KILN_ASSIGN_OR_RETURN(const TensorRef* t, get(name));
    KILN_RETURN_IF_ERROR(check_shape(*t, {rows, cols}));
    if (cols % dtype_block_elems(t->dtype) != 0) {
      return invalid_argument("{}: tensor '{}' is {} with {} columns, not a multiple of {}",
                              ck_.path(), name, dtype_name(t->dtype), cols,
                              dtype_block_elems(t->dtype));
    }
    return MatrixView::contiguous(t->dtype, t->data, rows, cols);
  }

  // `count` stacked [rows][cols] matrices (GGUF {cols, rows, count}).
  StatusOr<std::vector<MatrixView>> stacked(const std::string& name, int64_t count, int64_t rows,
                                            int64_t cols) const {
    KILN_ASSIGN_OR_RETURN(const TensorRef* t, get(name));
    KILN_RETURN_IF_ERROR(check_shape(*t, {count, rows, cols}));
    std::vector<MatrixView> out;
    const int64_t row_bytes = dtype_row_bytes(t->dtype, cols);
    for (int64_t i = 0; i < count; ++i) {
      out.push_back(MatrixView::contiguous(t->dtype, t->data + i * rows * row_bytes, rows, cols));
    }
    return out;
  }

  // Any small tensor widened to f32, checked against `shape`.
  StatusOr<std::vector<float>> vector(const std::string& name,
                                      const std::vector<int64_t>& shape) const {
    KILN_ASSIGN_OR_RETURN(const TensorRef* t, get(name));
    KILN_RETURN_IF_ERROR(check_shape(*t, shape));
    std::vector<float> out(static_cast<size_t>(t->numel()));
    if (t->numel() % dtype_block_elems(t->dtype) != 0) {
      return invalid_argument("{}: tensor '{}' size is not a multiple of its block", ck_.path(),
                              name);
    }
    dequantize_row(t->dtype, t->data, out.data(), t->numel());
    return out;
  }

  bool has(const std::string& name) const { return ck_.find(name) != nullptr; }

 private:
  const Checkpoint& ck_;
};

// Transposes per-head [N][R] blocks of an [H*(N+V)][R] kv_b matrix into [R][N] per head.
std::vector<MatrixView> transpose_k_b(const MatrixView& kv_b, int64_t H, int64_t N, int64_t V,
                                      int64_t R, WeightStore& owned) {
  const bool plain = dtype_block_elems(kv_b.dtype) == 1;  // block types are widened to f32
  const DType out_t = plain ? kv_b.dtype : DType::kF32;
  const int64_t esz = dtype_block_bytes(out_t);
  std::vector<MatrixView> heads;
  std::vector<float> row(static_cast<size_t>(R));
  for (int64_t h = 0; h < H; ++h) {
    std::vector<std::byte> buf(static_cast<size_t>(R * N * esz));
    for (int64_t n = 0; n < N; ++n) {
      const std::byte* src = kv_b.row(h * (N + V) + n);
      if (plain) {
        for (int64_t r = 0; r < R; ++r) std::memcpy(&buf[(r * N + n) * esz], src + r * esz, esz);
      } else {
        dequantize_row(kv_b.dtype, src, row.data(), R);
        for (int64_t r = 0; r < R; ++r) std::memcpy(&buf[(r * N + n) * esz], &row[r], esz);
      }
    }
    owned.bytes.push_back(std::move(buf));
    heads.push_back(MatrixView::contiguous(out_t, owned.bytes.back().data(), R, N));
  }
  return heads;
}

std::vector<MatrixView> v_b_from_kv_b(const MatrixView& kv_b, int64_t H, int64_t N, int64_t V) {
  std::vector<MatrixView> heads;
  for (int64_t h = 0; h < H; ++h) heads.push_back(kv_b.slice_rows(h * (N + V) + N, V));
  return heads;
}

// This rank's share of matrix `m` of entry `s` (named `name` in errors).
StatusOr<MatrixView> cut_matrix(const TensorSpec& s, const ModelConfig& c, const RankPlan& p,
                                const MatrixView& m, const std::string& name, WeightStore& owned) {
  const Range r = part_range(p, s.part);
  const int64_t unit = size_of(c, s.unit);
  switch (s.cut) {
    case Cut::kColumn: return column_parallel(m, Range{r.begin * unit, r.end * unit});
    case Cut::kRow: return row_parallel(m, Range{r.begin * unit, r.end * unit}, name, owned.bytes);
    case Cut::kReplicated:
    case Cut::kStack: break;
  }
  return m;
}

// One layer (or model-level, layer −1) tensor of this rank: the loader of every plain entry.
class LayerLoader {
 public:
  LayerLoader(const Loader& L, bool hf, const ModelConfig& c, const RankPlan& p, ModelWeights& w)
      : L_(L), hf_(hf), c_(c), p_(p), w_(w) {}

  Status load(const TensorSpec& s, int64_t layer) {
    const std::string name = s.name(hf_, layer);
    if (s.floats != nullptr) return load_floats(s, layer, name);
    switch (s.stack) {
      case Stack::kNone: {
        KILN_ASSIGN_OR_RETURN(MatrixView m, L_.matrix(name, rows(s), cols(s)));
        KILN_ASSIGN_OR_RETURN(s.matrix(w_, layer, 0), cut_matrix(s, c_, p_, m, name, w_.owned));
        return {};
      }
      case Stack::kExperts: return load_experts(s, layer);
      case Stack::kHeads: {
        KILN_ASSIGN_OR_RETURN(std::vector<MatrixView> all,
                              L_.stacked(name, s.stack_count(c_), rows(s), cols(s)));
        const Range r = part_range(p_, s.part);
        for (int64_t h = r.begin; h < r.end; ++h) s.matrix(w_, layer, h - r.begin) = all[h];
        return {};
      }
    }
    return {};
  }

  // HF kv_b_proj or a legacy GGUF's combined attn_kv_b: [H*(N+V)][R]; only this rank's heads.
  Status load_kv_b(const TensorSpec& s, int64_t layer, MlaWeights& w) {
    const std::string name = s.name(hf_, layer);
    KILN_ASSIGN_OR_RETURN(MatrixView kv_b, L_.matrix(name, rows(s), cols(s)));
    KILN_ASSIGN_OR_RETURN(kv_b, cut_matrix(s, c_, p_, kv_b, name, w_.owned));
    const int64_t H = p_.mla_heads.size(), N = c_.qk_nope_head_dim, V = c_.v_head_dim;
    w.k_b = transpose_k_b(kv_b, H, N, V, c_.kv_lora_rank, w_.owned);
    w.v_b = v_b_from_kv_b(kv_b, H, N, V);
    return {};
  }

  bool has(const TensorSpec& s, int64_t layer) const { return L_.has(s.name(hf_, layer)); }
  bool hf() const { return hf_; }

 private:
  int64_t rows(const TensorSpec& s) const { return size_of(c_, s.rows); }
  int64_t cols(const TensorSpec& s) const { return size_of(c_, s.cols); }

  Status load_floats(const TensorSpec& s, int64_t layer, const std::string& name) {
    KILN_ASSIGN_OR_RETURN(std::vector<float> v, L_.vector(name, s.expected_shape(c_)));
    if (s.special == Special::kNegExp && hf_) {
      for (float& a : v) a = -std::exp(a);  // HF stores A_log; GGUF already −exp(A_log)
    }
    FloatView& dst = s.floats(w_, layer);
    if (s.cut == Cut::kReplicated) {
      dst = w_.owned.keep(std::move(v));
    } else {  // column: this rank's rows of [rows][cols]
      const Range r = part_range(p_, s.part);
      const int64_t n = size_of(c_, s.unit) * cols(s);
      dst = w_.owned.keep({v.begin() + r.begin * n, v.begin() + r.end * n});
    }
    return {};
  }

  // HF: one tensor per expert; GGUF: one stacked tensor.
  Status load_experts(const TensorSpec& s, int64_t layer) {
    const int64_t E = s.stack_count(c_);
    std::vector<MatrixView> all;
    if (!hf_) {
      KILN_ASSIGN_OR_RETURN(all, L_.stacked(s.gguf_name(layer), E, rows(s), cols(s)));
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::string name = s.name(hf_, layer, e);
      MatrixView m;
      if (hf_) {
        KILN_ASSIGN_OR_RETURN(m, L_.matrix(name, rows(s), cols(s)));
      } else {
        m = all[e];
      }
      KILN_ASSIGN_OR_RETURN(s.matrix(w_, layer, e), cut_matrix(s, c_, p_, m, name, w_.owned));
    }
    return {};
  }

  const Loader& L_;
  bool hf_;
  const ModelConfig& c_;
  const RankPlan& p_;
  ModelWeights& w_;
};

// Every present entry of layer i, in file order; the special cases stay explicit.
Status load_layer(LayerLoader& ld, const ModelConfig& c, int64_t i, const RankPlan& p,
                  LayerWeights& w) {
  if (c.is_moe(i)) {
    w.moe.experts.resize(static_cast<size_t>(c.num_experts));
    w.moe.has_shared = c.num_shared_experts > 0;
  }
  if (!c.is_kda(i)) {
    w.mla.k_b.resize(static_cast<size_t>(p.mla_heads.size()));
    w.mla.v_b.resize(static_cast<size_t>(p.mla_heads.size()));
  }
  // W_UK/W_UV come from kv_b unless a GGUF file holds attn_k_b / attn_v_b.
  const bool split_kv_b = !ld.hf() && ld.has(tensor_with(Special::kKB), i);
  Status st;
  for_each_layer_tensor(c, i, [&](const TensorSpec& s) {
    if (!st.ok()) return;
    if (s.special == Special::kOptional && !ld.has(s, i)) return;
    if (s.special == Special::kKvB) {
      if (!split_kv_b) st = ld.load_kv_b(s, i, w.mla);
      return;
    }
    if ((s.special == Special::kKB || s.special == Special::kVB) && !split_kv_b) return;
    st = ld.load(s, i);
  });
  return st;
}

// Every matrix view of the weights.
std::vector<MatrixView*> all_matrices(ModelWeights& w, const ModelConfig& c) {
  std::vector<MatrixView*> out;
  for_each_weight(w, c, [&](const TensorSpec&, int64_t, int64_t, MatrixView& m) {
    out.push_back(&m);
  });
  return out;
}

// Copies every matrix of a rank's share out of the memory-mapped file, so the rank's resident
// memory is its share: views of the file would keep whole page-cache folios mapped, and those
// hold the neighbouring ranks' rows too. Views that already start an owned buffer (row-parallel
// cuts, transposed W_UK) stay as they are.
void own_all(ModelWeights& w, const ModelConfig& c, const LoadProgress& progress) {
  std::unordered_set<const std::byte*> already;
  for (const auto& b : w.owned.bytes) already.insert(b.data());
  std::vector<MatrixView*> todo;
  int64_t total = 0;
  for (MatrixView* m : all_matrices(w, c)) {
    if (already.count(m->data) != 0) continue;
    todo.push_back(m);
    total += m->rows * dtype_row_bytes(m->dtype, m->cols);
  }
  int64_t done = 0, reported = 0;
  for (MatrixView* m : todo) {
    const int64_t row_bytes = dtype_row_bytes(m->dtype, m->cols);
    std::vector<std::byte> buf(static_cast<size_t>(m->rows * row_bytes));
    for (int64_t i = 0; i < m->rows; ++i) {
      std::memcpy(buf.data() + i * row_bytes, m->row(i), static_cast<size_t>(row_bytes));
    }
    w.owned.bytes.push_back(std::move(buf));
    *m = MatrixView::contiguous(m->dtype, w.owned.bytes.back().data(), m->rows, m->cols);
    done += m->rows * row_bytes;
    if (progress && done - reported >= (int64_t{64} << 20)) {
      progress(done, total);
      reported = done;
    }
  }
  if (progress) progress(total, total);
}

}  // namespace

StatusOr<ModelWeights> load_weights(const Checkpoint& ck) {
  return load_weights(ck, whole_model_plan(ck.config()));
}

StatusOr<ModelWeights> load_weights(const Checkpoint& ck, const RankPlan& plan,
                                    const LoadProgress& progress) {
  const ModelConfig& c = ck.config();
  const bool hf = ck.format() == CheckpointFormat::kHf;
  Loader L(ck);
  ModelWeights w;
  w.layers_loaded = plan.layers;
  w.vocab = plan.vocab;
  LayerLoader ld(L, hf, c, plan, w);
  // The embedding is read on every stage: a tied lm_head is its rows.
  const TensorSpec& embed_spec = tensor_of(Block::kEmbedding);
  const std::string embed_name = embed_spec.name(hf, -1);
  KILN_ASSIGN_OR_RETURN(MatrixView embed, L.matrix(embed_name, c.vocab_size, c.hidden_size));
  if (plan.first_stage()) {
    KILN_ASSIGN_OR_RETURN(w.embed, cut_matrix(embed_spec, c, plan, embed, embed_name, w.owned));
  }
  if (plan.last_stage()) {
    KILN_RETURN_IF_ERROR(ld.load(tensor_of(Block::kFinalNorm), -1));
    const TensorSpec& head = tensor_of(Block::kLmHead);
    if (!c.tie_word_embeddings && (hf || ld.has(head, -1))) {
      KILN_RETURN_IF_ERROR(ld.load(head, -1));
    } else {
      KILN_ASSIGN_OR_RETURN(w.lm_head, cut_matrix(head, c, plan, embed, embed_name, w.owned));
    }
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = plan.layers.begin; i < plan.layers.end; ++i) {
    KILN_RETURN_IF_ERROR(load_layer(ld, c, i, plan, w.layers[i]));
  }
  if (plan.tensor > 1 || plan.pipeline > 1) {
    own_all(w, c, progress);
  } else if (progress) {
    int64_t total = 0;  // one rank reads the mapped file in place: nothing to copy
    for (MatrixView* m : all_matrices(w, c)) total += m->rows * dtype_row_bytes(m->dtype, m->cols);
    progress(total, total);
  }
  return w;
}

uint64_t ModelWeights::active_bytes_per_token(const ModelConfig& c) const {
  uint64_t total = 0;
  for_each_weight(*this, c, [&](const TensorSpec& s, int64_t, int64_t index, const MatrixView& m) {
    if (s.block == Block::kEmbedding) return;
    if (s.block != Block::kExperts) {
      total += view_bytes(m);
    } else if (index == 0) {
      total += view_bytes(m) * static_cast<uint64_t>(c.experts_per_token);
    }
  });
  return total;
}

}  // namespace kiln
