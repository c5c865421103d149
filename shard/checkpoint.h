// Checkpoint: an opened model file set — an HF directory (config.json + safetensors) or a GGUF —
// exposing the config and the raw tensors under the file's own names, memory-mapped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/config.h"

namespace kiln {

class GgufFile;
class SafetensorsSet;

// A tensor as stored: shape outermost first (GGUF ne reversed), data in the file's dtype.
struct TensorRef {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;

  int64_t numel() const;
  // Shape with all size-1 dimensions removed (layout-equivalent, used for shape checks).
  std::vector<int64_t> squeezed() const;
};

std::string shape_string(const std::vector<int64_t>& shape);

class Checkpoint {
 public:
  // `path` is an HF directory (config.json + model.safetensors[.index.json]) or a .gguf file.
  static StatusOr<std::unique_ptr<Checkpoint>> open(const std::string& path);
  ~Checkpoint();

  const ModelConfig& config() const { return config_; }
  CheckpointFormat format() const { return config_.format; }
  const std::string& path() const { return path_; }
  // Nullptr when absent.
  const TensorRef* find(const std::string& name) const;
  const std::vector<TensorRef>& tensors() const { return tensors_; }
  // The GGUF (for its vocabulary) when format() == kGguf, else nullptr.
  const GgufFile* gguf() const { return gguf_.get(); }
  uint64_t total_bytes() const;
  // Drops this process's resident pages of the files (views stay valid and fault back in).
  void release_pages() const;

 private:
  Checkpoint() = default;
  Status infer_gguf_kda_heads();
  std::string path_;
  ModelConfig config_;
  std::vector<TensorRef> tensors_;
  std::vector<std::pair<std::string, size_t>> sorted_index_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsSet> safetensors_;
};

}  // namespace kiln
