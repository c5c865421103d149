// What both backends share: the arrangement of a batch into rows and the workspace's sizes.
#include "shard/backend.h"

#include "kernels/base/check.h"

namespace kiln {

void arrange_batch(const Batch& batch, const StateCache& state, bool decode_first,
                   BatchRows& rows) {
  rows.spans.clear();
  rows.ids.clear();
  rows.out_rows.clear();
  rows.n_decode = 0;
  std::vector<size_t>& at = rows.span_at;
  at.assign(batch.spans.size(), 0);
  auto place = [&](size_t i) {
    const BatchSpan& s = batch.spans[i];
    at[i] = rows.spans.size();
    rows.spans.push_back({s.slot, state.length(s.slot), rows.n_tokens(), s.n});
    const std::span<const int32_t> tokens = batch.tokens(s);
    rows.ids.insert(rows.ids.end(), tokens.begin(), tokens.end());
  };
  if (decode_first) {
    for (const bool decode : {true, false}) {
      for (size_t i = 0; i < batch.spans.size(); ++i) {
        if ((batch.spans[i].n <= kDecodeSpanMax) != decode) continue;
        place(i);
        if (decode) rows.n_decode += batch.spans[i].n;
      }
    }
  } else {
    for (size_t i = 0; i < batch.spans.size(); ++i) place(i);
  }
  for (size_t i = 0; i < batch.spans.size(); ++i) {
    const SeqSpan& sp = rows.spans[at[i]];
    for (int64_t r = batch.spans[i].all_logits ? sp.begin : sp.begin + sp.n - 1;
         r < sp.begin + sp.n; ++r) {
      rows.out_rows.push_back(static_cast<int32_t>(r));
    }
  }
}

int64_t workspace_floats(const WorkspaceShape& s, Buf b, int64_t T) {
  const ModelConfig& c = s.shard;
  const int64_t D = c.hidden_size, C = c.kda_proj_dim(), Hk = c.kda_num_heads;
  const int64_t Hm = c.mla_num_heads, N = c.qk_nope_head_dim, P = c.qk_rope_head_dim;
  const int64_t R = c.kv_lora_rank, V = c.v_head_dim, L = R + P;
  const int64_t E = c.num_experts, k = c.experts_per_token, Fe = c.moe_intermediate_size;
  switch (b) {
    case Buf::kHidden:
    case Buf::kNormed:
    case Buf::kDelta: return T * D;
    case Buf::kKdaProj:
    case Buf::kKdaConv: return T * 3 * C;
    case Buf::kKdaLow: return T * c.kda_gate_rank;
    case Buf::kKdaGate:
    case Buf::kKdaZ:
    case Buf::kKdaCore: return T * C;
    case Buf::kKdaBeta: return T * Hk;
    case Buf::kMlaQ: return T * Hm * (N + P);
    case Buf::kMlaLatent: return T * L;
    case Buf::kMlaAbsorbed: return T * Hm * L;
    case Buf::kMlaAttended: return T * Hm * R;
    case Buf::kMlaHeads: return T * Hm * V;
    case Buf::kFfnGate:
    case Buf::kFfnUp: return T * s.ffn_rows;
    case Buf::kMoeLogits: return T * E;
    case Buf::kMoeWeights:
    case Buf::kMoeIds:
    case Buf::kMoeOrder: return T * k;
    case Buf::kMoeOffsets: return E + 1;
    case Buf::kMoeRouted: return T * k * D;
    case Buf::kMoeGate:
    case Buf::kMoeUp: return T * k * Fe;
    case Buf::kLogitsLocal: return s.tensor_parallel ? T * s.vocab_local : 0;
    case Buf::kLogitsGathered: return s.tensor_parallel ? T * s.vocab : 0;
    case Buf::kLogits: return T * s.vocab;
    case Buf::kCount: break;
  }
  KILN_CHECK_MSG(false, "no such workspace buffer");
  return 0;
}

}  // namespace kiln
