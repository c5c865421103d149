// Maps HF and GGUF tensor names onto ModelWeights, checking every shape.
#include "shard/weights.h"

#include "shard/parallel_layers.h"

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

  // vector(), kept in `owned`.
  StatusOr<FloatView> floats(const std::string& name, const std::vector<int64_t>& shape,
                             WeightStore& owned) const {
    KILN_ASSIGN_OR_RETURN(std::vector<float> v, vector(name, shape));
    return owned.keep(std::move(v));
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

// Elements [begin, end) of a vector, kept in `owned`.
FloatView sub(const std::vector<float>& v, int64_t begin, int64_t end, WeightStore& owned) {
  return owned.keep({v.begin() + begin, v.begin() + end});
}

struct Names {
  bool hf;
  std::string layer(int64_t i, const char* hf_name, const char* gguf_name) const {
    return hf ? fmt::format("model.layers.{}.{}", i, hf_name) : fmt::format("blk.{}.{}", i, gguf_name);
  }
};

Status load_kda(const Loader& L, const Names& n, const ModelConfig& c, int64_t i,
                const RankPlan& p, KdaWeights& w, WeightStore& owned) {
  const int64_t D = c.hidden_size, H = c.kda_num_heads, K = c.kda_head_dim, C = H * K;
  const int64_t r = c.kda_gate_rank, taps = c.kda_conv_kernel;
  const int64_t h0 = p.kda_heads.begin, h1 = p.kda_heads.end;
  const Range ch{h0 * K, h1 * K};  // this rank's channels
  MatrixView q, k, v, f_b, b, g_b, o;
  KILN_ASSIGN_OR_RETURN(q, L.matrix(n.layer(i, "self_attn.q_proj.weight", "attn_q.weight"), C, D));
  KILN_ASSIGN_OR_RETURN(k, L.matrix(n.layer(i, "self_attn.k_proj.weight", "attn_k.weight"), C, D));
  KILN_ASSIGN_OR_RETURN(v, L.matrix(n.layer(i, "self_attn.v_proj.weight", "attn_v.weight"), C, D));
  KILN_ASSIGN_OR_RETURN(w.f_a, L.matrix(n.layer(i, "self_attn.f_a_proj.weight", "ssm_f_a.weight"), r, D));
  KILN_ASSIGN_OR_RETURN(f_b, L.matrix(n.layer(i, "self_attn.f_b_proj.weight", "ssm_f_b.weight"), C, r));
  KILN_ASSIGN_OR_RETURN(b, L.matrix(n.layer(i, "self_attn.b_proj.weight", "ssm_beta.weight"), H, D));
  KILN_ASSIGN_OR_RETURN(w.g_a, L.matrix(n.layer(i, "self_attn.g_a_proj.weight", "ssm_g_a.weight"), r, D));
  KILN_ASSIGN_OR_RETURN(g_b, L.matrix(n.layer(i, "self_attn.g_b_proj.weight", "ssm_g_b.weight"), C, r));
  KILN_ASSIGN_OR_RETURN(o, L.matrix(n.layer(i, "self_attn.o_proj.weight", "attn_output.weight"), D, C));
  KILN_ASSIGN_OR_RETURN(w.o, row_parallel(o, ch, n.layer(i, "self_attn.o_proj.weight", "attn_output.weight"), owned.bytes));
  w.q = column_parallel(q, ch);
  w.k = column_parallel(k, ch);
  w.v = column_parallel(v, ch);
  w.f_b = column_parallel(f_b, ch);
  w.g_b = column_parallel(g_b, ch);
  w.b = column_parallel(b, p.kda_heads);
  std::vector<float> conv;
  KILN_ASSIGN_OR_RETURN(conv, L.vector(n.layer(i, "self_attn.q_conv1d.weight", "ssm_conv1d_q.weight"), {C, taps}));
  w.conv_q = sub(conv, ch.begin * taps, ch.end * taps, owned);
  KILN_ASSIGN_OR_RETURN(conv, L.vector(n.layer(i, "self_attn.k_conv1d.weight", "ssm_conv1d_k.weight"), {C, taps}));
  w.conv_k = sub(conv, ch.begin * taps, ch.end * taps, owned);
  KILN_ASSIGN_OR_RETURN(conv, L.vector(n.layer(i, "self_attn.v_conv1d.weight", "ssm_conv1d_v.weight"), {C, taps}));
  w.conv_v = sub(conv, ch.begin * taps, ch.end * taps, owned);
  KILN_ASSIGN_OR_RETURN(conv, L.vector(n.layer(i, "self_attn.dt_bias", "ssm_dt.bias"), {C}));
  w.dt_bias = sub(conv, ch.begin, ch.end, owned);
  KILN_ASSIGN_OR_RETURN(w.o_norm, L.floats(n.layer(i, "self_attn.o_norm.weight", "ssm_norm.weight"), {K}, owned));
  KILN_ASSIGN_OR_RETURN(conv, L.vector(n.layer(i, "self_attn.A_log", "ssm_a"), {H}));
  if (n.hf) {
    for (float& a : conv) a = -std::exp(a);  // HF stores A_log; GGUF already −exp(A_log)
  }
  w.a_neg = sub(conv, h0, h1, owned);
  return {};
}

Status load_mla(const Loader& L, const Names& n, const ModelConfig& c, int64_t i,
                const RankPlan& p, MlaWeights& w, WeightStore& owned) {
  const int64_t D = c.hidden_size, H = c.mla_num_heads, N = c.qk_nope_head_dim;
  const int64_t P = c.qk_rope_head_dim, R = c.kv_lora_rank, V = c.v_head_dim;
  const int64_t h0 = p.mla_heads.begin, h1 = p.mla_heads.end;
  MatrixView q, o;
  KILN_ASSIGN_OR_RETURN(q, L.matrix(n.layer(i, "self_attn.q_proj.weight", "attn_q.weight"), H * (N + P), D));
  KILN_ASSIGN_OR_RETURN(w.kv_a, L.matrix(n.layer(i, "self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"), R + P, D));
  KILN_ASSIGN_OR_RETURN(w.kv_a_norm, L.floats(n.layer(i, "self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"), {R}, owned));
  KILN_ASSIGN_OR_RETURN(o, L.matrix(n.layer(i, "self_attn.o_proj.weight", "attn_output.weight"), D, H * V));
  KILN_ASSIGN_OR_RETURN(w.o, row_parallel(o, Range{h0 * V, h1 * V}, n.layer(i, "self_attn.o_proj.weight", "attn_output.weight"), owned.bytes));
  w.q = column_parallel(q, Range{h0 * (N + P), h1 * (N + P)});
  const std::string k_b = n.layer(i, "", "attn_k_b.weight");
  if (!n.hf && L.has(k_b)) {
    std::vector<MatrixView> kb, vb;
    KILN_ASSIGN_OR_RETURN(kb, L.stacked(k_b, H, R, N));
    KILN_ASSIGN_OR_RETURN(vb, L.stacked(n.layer(i, "", "attn_v_b.weight"), H, V, R));
    w.k_b.assign(kb.begin() + h0, kb.begin() + h1);
    w.v_b.assign(vb.begin() + h0, vb.begin() + h1);
    return {};
  }
  // HF kv_b_proj, or a legacy GGUF's combined attn_kv_b: [H*(N+V)][R]; only this rank's heads.
  MatrixView kv_b;
  KILN_ASSIGN_OR_RETURN(kv_b, L.matrix(n.layer(i, "self_attn.kv_b_proj.weight", "attn_kv_b.weight"), H * (N + V), R));
  kv_b = column_parallel(kv_b, Range{h0 * (N + V), h1 * (N + V)});
  w.k_b = transpose_k_b(kv_b, h1 - h0, N, V, R, owned);
  w.v_b = v_b_from_kv_b(kv_b, h1 - h0, N, V);
  return {};
}

// A SwiGLU MLP sliced on its intermediate dimension: gate/up rows, down columns.
Status load_mlp(const Loader& L, const std::string& gate, const std::string& up,
                const std::string& down, int64_t F, int64_t D, const Range& slice, MlpWeights& w,
                WeightStore& owned) {
  MatrixView g, u, d;
  KILN_ASSIGN_OR_RETURN(g, L.matrix(gate, F, D));
  KILN_ASSIGN_OR_RETURN(u, L.matrix(up, F, D));
  KILN_ASSIGN_OR_RETURN(d, L.matrix(down, D, F));
  KILN_ASSIGN_OR_RETURN(w.down, row_parallel(d, slice, down, owned.bytes));
  w.gate = column_parallel(g, slice);
  w.up = column_parallel(u, slice);
  return {};
}

Status load_moe(const Loader& L, const Names& n, const ModelConfig& c, int64_t i,
                const RankPlan& p, MoeWeights& w, WeightStore& owned) {
  const int64_t D = c.hidden_size, E = c.num_experts, F = c.moe_intermediate_size;
  const Range& s = p.expert_ffn;
  KILN_ASSIGN_OR_RETURN(w.router, L.matrix(n.layer(i, "block_sparse_moe.gate.weight", "ffn_gate_inp.weight"), E, D));
  const std::string bias = n.layer(i, "block_sparse_moe.gate.e_score_correction_bias", "exp_probs_b.bias");
  if (L.has(bias)) {
    KILN_ASSIGN_OR_RETURN(w.bias, L.floats(bias, {E}, owned));
  }
  w.experts.resize(static_cast<size_t>(E));
  if (n.hf) {
    for (int64_t e = 0; e < E; ++e) {
      auto name = [&](const char* m) {
        return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.{}.weight", i, e, m);
      };
      KILN_RETURN_IF_ERROR(load_mlp(L, name("w1"), name("w3"), name("w2"), F, D, s, w.experts[e], owned));
    }
  } else {
    std::vector<MatrixView> gate, up, down;
    KILN_ASSIGN_OR_RETURN(gate, L.stacked(n.layer(i, "", "ffn_gate_exps.weight"), E, F, D));
    KILN_ASSIGN_OR_RETURN(up, L.stacked(n.layer(i, "", "ffn_up_exps.weight"), E, F, D));
    KILN_ASSIGN_OR_RETURN(down, L.stacked(n.layer(i, "", "ffn_down_exps.weight"), E, D, F));
    for (int64_t e = 0; e < E; ++e) {
      KILN_ASSIGN_OR_RETURN(w.experts[e].down, row_parallel(down[e], s, n.layer(i, "", "ffn_down_exps.weight"), owned.bytes));
      w.experts[e].gate = column_parallel(gate[e], s);
      w.experts[e].up = column_parallel(up[e], s);
    }
  }
  w.has_shared = c.num_shared_experts > 0;
  if (w.has_shared) {
    const int64_t Fs = F * c.num_shared_experts;
    KILN_RETURN_IF_ERROR(load_mlp(
        L, n.layer(i, "block_sparse_moe.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"),
        n.layer(i, "block_sparse_moe.shared_experts.up_proj.weight", "ffn_up_shexp.weight"),
        n.layer(i, "block_sparse_moe.shared_experts.down_proj.weight", "ffn_down_shexp.weight"),
        Fs, D, p.shared_ffn, w.shared, owned));
  }
  return {};
}

Status load_layer(const Loader& L, const Names& n, const ModelConfig& c, int64_t i,
                  const RankPlan& p, LayerWeights& w, WeightStore& owned) {
  const int64_t D = c.hidden_size;
  KILN_ASSIGN_OR_RETURN(w.attn_norm, L.floats(n.layer(i, "input_layernorm.weight", "attn_norm.weight"), {D}, owned));
  KILN_ASSIGN_OR_RETURN(w.ffn_norm, L.floats(n.layer(i, "post_attention_layernorm.weight", "ffn_norm.weight"), {D}, owned));
  if (c.is_kda(i)) {
    KILN_RETURN_IF_ERROR(load_kda(L, n, c, i, p, w.kda, owned));
  } else {
    KILN_RETURN_IF_ERROR(load_mla(L, n, c, i, p, w.mla, owned));
  }
  if (c.is_moe(i)) return load_moe(L, n, c, i, p, w.moe, owned);
  return load_mlp(L, n.layer(i, "mlp.gate_proj.weight", "ffn_gate.weight"),
                  n.layer(i, "mlp.up_proj.weight", "ffn_up.weight"),
                  n.layer(i, "mlp.down_proj.weight", "ffn_down.weight"), c.intermediate_size, D,
                  p.dense_ffn, w.dense, owned);
}

// Every matrix of the weights, in load order.
std::vector<MatrixView*> all_matrices(ModelWeights& w) {
  std::vector<MatrixView*> out = {&w.embed, &w.lm_head};
  auto mlp = [&](MlpWeights& m) { out.insert(out.end(), {&m.gate, &m.up, &m.down}); };
  for (LayerWeights& l : w.layers) {
    KdaWeights& k = l.kda;
    out.insert(out.end(), {&k.q, &k.k, &k.v, &k.f_a, &k.f_b, &k.b, &k.g_a, &k.g_b, &k.o});
    MlaWeights& a = l.mla;
    out.insert(out.end(), {&a.q, &a.kv_a, &a.o});
    for (MatrixView& v : a.k_b) out.push_back(&v);
    for (MatrixView& v : a.v_b) out.push_back(&v);
    mlp(l.dense);
    out.push_back(&l.moe.router);
    for (MlpWeights& e : l.moe.experts) mlp(e);
    mlp(l.moe.shared);
  }
  return out;
}

// Copies every matrix of a rank's share out of the memory-mapped file, so the rank's resident
// memory is its share: views of the file would keep whole page-cache folios mapped, and those
// hold the neighbouring ranks' rows too. Views that already start an owned buffer (row-parallel
// cuts, transposed W_UK) stay as they are.
void own_all(ModelWeights& w, const LoadProgress& progress) {
  std::unordered_set<const std::byte*> already;
  for (const auto& b : w.owned.bytes) already.insert(b.data());
  std::vector<MatrixView*> todo;
  int64_t total = 0;
  for (MatrixView* m : all_matrices(w)) {
    if (m->data == nullptr || m->rows == 0 || already.count(m->data) != 0) continue;
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
  const Names n{ck.format() == CheckpointFormat::kHf};
  Loader L(ck);
  ModelWeights w;
  w.layers_loaded = plan.layers;
  w.vocab = plan.vocab;
  const int64_t D = c.hidden_size, vocab = c.vocab_size;
  MatrixView embed;
  KILN_ASSIGN_OR_RETURN(embed, L.matrix(n.hf ? "model.embed_tokens.weight" : "token_embd.weight", vocab, D));
  if (plan.first_stage()) w.embed = column_parallel(embed, plan.vocab);
  if (plan.last_stage()) {
    KILN_ASSIGN_OR_RETURN(w.final_norm, L.floats(n.hf ? "model.norm.weight" : "output_norm.weight", {D}, w.owned));
    const std::string head = n.hf ? "lm_head.weight" : "output.weight";
    MatrixView lm = embed;
    if (!c.tie_word_embeddings && (n.hf || L.has(head))) {
      KILN_ASSIGN_OR_RETURN(lm, L.matrix(head, vocab, D));
    }
    w.lm_head = column_parallel(lm, plan.vocab);
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = plan.layers.begin; i < plan.layers.end; ++i) {
    KILN_RETURN_IF_ERROR(load_layer(L, n, c, i, plan, w.layers[i], w.owned));
  }
  if (plan.tensor > 1 || plan.pipeline > 1) {
    own_all(w, progress);
  } else if (progress) {
    int64_t total = 0;  // one rank reads the mapped file in place: nothing to copy
    for (MatrixView* m : all_matrices(w)) {
      if (m->data != nullptr) total += m->rows * dtype_row_bytes(m->dtype, m->cols);
    }
    progress(total, total);
  }
  return w;
}

namespace {
// Bytes a matmul reads: a column-sliced (row-parallel) view reads only its part of each row.
uint64_t bytes_of(const MatrixView& m) {
  return static_cast<uint64_t>(m.rows * dtype_row_bytes(m.dtype, m.cols));
}
uint64_t bytes_of(const MlpWeights& m) { return bytes_of(m.gate) + bytes_of(m.up) + bytes_of(m.down); }
}  // namespace

uint64_t ModelWeights::active_bytes_per_token(const ModelConfig& c) const {
  uint64_t total = bytes_of(lm_head);
  for (int64_t i = layers_loaded.begin; i < layers_loaded.end; ++i) {
    const LayerWeights& l = layers[i];
    if (c.is_kda(i)) {
      const KdaWeights& k = l.kda;
      for (const MatrixView* m : {&k.q, &k.k, &k.v, &k.f_a, &k.f_b, &k.b, &k.g_a, &k.g_b, &k.o}) {
        total += bytes_of(*m);
      }
    } else {
      total += bytes_of(l.mla.q) + bytes_of(l.mla.kv_a) + bytes_of(l.mla.o);
      for (const MatrixView& m : l.mla.k_b) total += bytes_of(m);
      for (const MatrixView& m : l.mla.v_b) total += bytes_of(m);
    }
    if (c.is_moe(i)) {
      total += bytes_of(l.moe.router);
      if (!l.moe.experts.empty()) {
        total += bytes_of(l.moe.experts[0]) * static_cast<uint64_t>(c.experts_per_token);
      }
      if (l.moe.has_shared) total += bytes_of(l.moe.shared);
    } else {
      total += bytes_of(l.dense);
    }
  }
  return total;
}

}  // namespace kiln
