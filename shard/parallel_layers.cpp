#include "shard/parallel_layers.h"

#include <algorithm>
#include <cstring>


namespace kiln {

MatrixView column_parallel(const MatrixView& w, const Range& r) {
  return w.slice_rows(r.begin, r.size());
}

StatusOr<MatrixView> row_parallel(const MatrixView& w, const Range& r, const std::string& name,
                                  std::vector<std::vector<std::byte>>& owned) {
  const int64_t b = dtype_block_elems(w.dtype);
  if (r.begin % b != 0 || r.size() % b != 0) {
    return invalid_argument("{}: input slice [{}, {}) is not aligned to the {}-element blocks of {}",
                            name, r.begin, r.end, b, dtype_name(w.dtype));
  }
  const MatrixView view = w.slice_cols(r.begin, r.size());
  if (r.size() == w.cols) return view;
  const int64_t row_bytes = dtype_row_bytes(w.dtype, r.size());
  std::vector<std::byte> buf(static_cast<size_t>(w.rows * row_bytes));
  for (int64_t i = 0; i < w.rows; ++i) {
    std::memcpy(buf.data() + i * row_bytes, view.row(i), static_cast<size_t>(row_bytes));
  }
  owned.push_back(std::move(buf));
  return MatrixView::contiguous(w.dtype, owned.back().data(), w.rows, r.size());
}

void RowParallelLinear::forward(Backend& be, const MatrixView& w, const float* x,
                                int64_t x_stride, float* y, int64_t rows) const {
  be.matmul(w, x, x_stride, y, w.rows);
  reduce(y, rows * w.rows);
}

void RowParallelLinear::reduce(float* y, int64_t n) const {
  if (tp_ != nullptr) tp_->all_reduce_sum(y, n);
}

void VocabParallelEmbedding::forward(Backend& be, float* h) const {
  be.embed(rows_, vocab_, h);
  if (vocab_.size() != vocab_size_) {
    RowParallelLinear(tp_).reduce(h, be.rows().n_tokens() * rows_.cols);
  }
}

void ParallelLMHead::forward(Backend& be, const float* h, float* logits) {
  if (tp_ == nullptr) {
    be.lm_head(rows_, norm_, eps_, h, logits);
    return;
  }
  const int64_t rows = static_cast<int64_t>(be.rows().out_rows.size());
  const int64_t mine = group_vocab_[static_cast<size_t>(tp_rank_)].size();
  float* local = be.buffer(Buf::kLogitsLocal);
  float* gathered = be.buffer(Buf::kLogitsGathered);
  be.lm_head(rows_, norm_, eps_, h, local);
  counts_.clear();
  for (const Range& r : group_vocab_) counts_.push_back(rows * r.size());
  tp_->all_gather_v(local, rows * mine, gathered, counts_);
  int64_t off = 0;
  for (const Range& r : group_vocab_) {  // rank-major chunks [rows][|r|] → columns r of each row
    be.copy2d(gathered + off, r.size(), logits + r.begin, vocab_size_, rows, r.size());
    off += rows * r.size();
  }
}

void PipelineLink::receive_hidden(float* hidden, int64_t n) {
  pp_->recv(hidden, n * static_cast<int64_t>(sizeof(float)), stage_ - 1);
}

void PipelineLink::send_hidden(const float* hidden, int64_t n) {
  pp_->send(hidden, n * static_cast<int64_t>(sizeof(float)), stage_ + 1);
}

void PipelineLink::logits_to_first_stage(float* logits, int64_t n) {
  if (stages_ == 1 || tp_rank_ != 0) return;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));
  if (stage_ == stages_ - 1) {
    pp_->send(logits, bytes, 0);
  } else if (stage_ == 0) {
    pp_->recv(logits, bytes, stages_ - 1);
  }
}

}  // namespace kiln
