// The parallel layers: the only code that cuts a weight by a rank's plan or calls a collective
// (architecture.md §4). They run the math on a Backend and the collectives on backend memory
// (a GPU rank's communicators take device pointers: NCCL, or host staging for MPI). Column-parallel = this rank's output rows of a weight; row-parallel = its
// input columns, whose partial outputs are summed over the TP group; the vocab-parallel
// embedding and lm_head own a range of vocabulary rows. A layer with a null communicator runs on
// one rank and does no communication.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/base/matrix.h"
#include "kernels/base/status.h"
#include "shard/backend.h"
#include "shard/communicator.h"
#include "shard/partition.h"

namespace kiln {

// Rows [r.begin, r.end) of an [out][in] weight: this rank's outputs.
MatrixView column_parallel(const MatrixView& w, const Range& r);
// Columns [r.begin, r.end) of an [out][in] weight: this rank's inputs. Quantised weights must be
// cut on block boundaries (InvalidArgument naming `name` otherwise). A strict subset of the
// columns is copied into a compact buffer appended to `owned`, so the rank keeps only its bytes
// resident (a view would touch every page of the weight, since each row holds every rank's part).
StatusOr<MatrixView> row_parallel(const MatrixView& w, const Range& r, const std::string& name,
                                  std::vector<std::vector<std::byte>>& owned);

// The row-parallel linear (vLLM's RowParallelLinear): this rank's input columns of a weight, whose
// partial outputs are summed over the TP group. No group: one rank, no communication.
class RowParallelLinear {
 public:
  explicit RowParallelLinear(Communicator* tp = nullptr) : tp_(tp) {}
  // y [rows][w.rows] = Σ over the group of w · x (x: [rows][x_stride]); rows = the backend's
  // batch rows.
  void forward(Backend& be, const MatrixView& w, const float* x, int64_t x_stride, float* y,
               int64_t rows) const;
  // Sums n floats of partial outputs over the group, in place: for blocks whose row-parallel
  // outputs add up before one reduction (MoE: routed experts + shared expert).
  void reduce(float* y, int64_t n) const;

 private:
  Communicator* tp_ = nullptr;
};

// Embedding rows of this rank's vocab range; ids elsewhere contribute zeros, and the TP group's
// sum gives every rank the full rows.
class VocabParallelEmbedding {
 public:
  VocabParallelEmbedding() = default;
  VocabParallelEmbedding(MatrixView rows, Range vocab, int64_t vocab_size, Communicator* tp)
      : rows_(rows), vocab_(vocab), vocab_size_(vocab_size), tp_(tp) {}
  // h: [T][D] for the backend's batch rows.
  void forward(Backend& be, float* h) const;

 private:
  MatrixView rows_;
  Range vocab_;
  int64_t vocab_size_ = 0;
  Communicator* tp_ = nullptr;
};

// lm_head rows of this rank's vocab range (with the final norm); logits of all ranks are
// gathered so each rank of the TP group holds [rows][vocab].
class ParallelLMHead {
 public:
  ParallelLMHead() = default;
  // group_vocab: the vocab range of every rank of the TP group, in rank order.
  ParallelLMHead(MatrixView rows, FloatView norm, float eps, std::vector<Range> group_vocab,
                 int64_t vocab_size, Communicator* tp, int tp_rank)
      : rows_(rows), norm_(norm), eps_(eps), group_vocab_(std::move(group_vocab)),
        vocab_size_(vocab_size), tp_(tp), tp_rank_(tp_rank) {}
  // h: the residual stream [T][D]; logits [out rows][vocab] (backend memory) for the batch's
  // output rows, in output order.
  void forward(Backend& be, const float* h, float* logits);

 private:
  MatrixView rows_;
  FloatView norm_;
  float eps_ = 0.0f;
  std::vector<Range> group_vocab_;
  int64_t vocab_size_ = 0;
  Communicator* tp_ = nullptr;
  int tp_rank_ = 0;
  std::vector<int64_t> counts_;
};

// Stage-to-stage traffic of a pipeline, on backend memory: hidden states forward, logits from
// the last stage's first TP rank back to global rank 0. With one stage it does nothing.
class PipelineLink {
 public:
  PipelineLink() = default;
  PipelineLink(Communicator* pp, int stage, int stages, int tp_rank)
      : pp_(pp), stage_(stage), stages_(stages), tp_rank_(tp_rank) {}
  // hidden: [n] floats, from the previous stage (every stage but the first).
  void receive_hidden(float* hidden, int64_t n);
  // To the next stage (every stage but the last).
  void send_hidden(const float* hidden, int64_t n);
  // True where a forward returns logits: the last stage, and stage 0's first TP rank.
  bool has_logits() const { return stage_ == stages_ - 1 || (stage_ == 0 && tp_rank_ == 0); }
  // Moves [n] logits from the last stage to stage 0 (tp_rank 0 only).
  void logits_to_first_stage(float* logits, int64_t n);

 private:
  Communicator* pp_ = nullptr;
  int stage_ = 0, stages_ = 1, tp_rank_ = 0;
};

}  // namespace kiln
