#include "shard/parallel_layers.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"

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

void reduce_row_parallel(Communicator* tp, float* y, int64_t n) {
  if (tp != nullptr) tp->all_reduce_sum(y, n);
}

void VocabParallelEmbedding::forward(const int32_t* ids, int64_t n, float* h) const {
  if (vocab_.size() == vocab_size_) {
    cpu::embedding_lookup(rows_, ids, n, h);
    return;
  }
  const int64_t D = rows_.cols;
  std::fill_n(h, n * D, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] >= vocab_.begin && ids[t] < vocab_.end) {
      const int32_t local = ids[t] - static_cast<int32_t>(vocab_.begin);
      cpu::embedding_lookup(rows_, &local, 1, h + t * D);
    }
  }
  reduce_row_parallel(tp_, h, n * D);
}

void ParallelLMHead::forward(cpu::ThreadPool& pool, const float* x, int64_t rows,
                             int64_t n_decode, float* logits) {
  const int64_t D = rows_.cols;
  if (tp_ == nullptr) {
    cpu::matmul(pool, rows_, x, D, rows, logits, vocab_size_, n_decode);
    return;
  }
  const int64_t mine = group_vocab_[static_cast<size_t>(tp_rank_)].size();
  local_.resize(static_cast<size_t>(rows * mine));
  cpu::matmul(pool, rows_, x, D, rows, local_.data(), mine, n_decode);
  std::vector<int64_t> counts;
  for (const Range& r : group_vocab_) counts.push_back(rows * r.size());
  gathered_.resize(static_cast<size_t>(rows * vocab_size_));
  tp_->all_gather_v(local_.data(), rows * mine, gathered_.data(), counts);
  int64_t off = 0;
  for (const Range& r : group_vocab_) {  // rank-major chunks [rows][|r|] → columns r of each row
    for (int64_t row = 0; row < rows; ++row) {
      std::copy_n(gathered_.data() + off + row * r.size(), r.size(),
                  logits + row * vocab_size_ + r.begin);
    }
    off += rows * r.size();
  }
}

void PipelineLink::receive_hidden(float* hidden, int64_t n) {
  pp_->recv(hidden, n * static_cast<int64_t>(sizeof(float)), stage_ - 1);
}

void PipelineLink::send_hidden(const float* hidden, int64_t n) {
  pp_->send(hidden, n * static_cast<int64_t>(sizeof(float)), stage_ + 1);
}

void PipelineLink::logits_to_first_stage(std::vector<float>& logits, int64_t n) {
  if (stages_ == 1 || tp_rank_ != 0) return;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));
  if (stage_ == stages_ - 1) {
    pp_->send(logits.data(), bytes, 0);
  } else if (stage_ == 0) {
    logits.resize(static_cast<size_t>(n));
    pp_->recv(logits.data(), bytes, stages_ - 1);
  }
}

}  // namespace kiln
