// safetensors reader (single file or a sharded set with model.safetensors.index.json) and writer.
// The reader validates the header strictly (size bound, UTF-8 JSON, no duplicate keys, known
// dtypes, offsets contiguous from 0 without gaps or overlaps, sizes = shape × dtype size, last
// end = data length) and memory-maps the data. Dtypes: F32, F16, BF16.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/mapped_file.h"

namespace kiln {

struct SafetensorsTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // row-major, outermost first
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;            // path of the file holding it
};

class SafetensorsFile {
 public:
  static StatusOr<SafetensorsFile> open(const std::string& path);
  static StatusOr<SafetensorsFile> parse(std::shared_ptr<MappedFile> file);
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* find(const std::string& name) const;
  const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of an HF model directory: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` (every listed shard must exist, every tensor must be in the shard
// the index names, no tensor twice).
class SafetensorsSet {
 public:
  static StatusOr<SafetensorsSet> open_dir(const std::string& dir);
  const SafetensorsTensor* find(const std::string& name) const;
  std::vector<std::string> names() const;
  // Drops this process's resident pages of every shard (see MappedFile::release_pages).
  void release_pages() const {
    for (const auto& f : files_) f->file()->release_pages();
  }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsTensor*> by_name_;
};

class SafetensorsWriter {
 public:
  // dtype F32/F16/BF16; bytes must match shape × element size.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
           std::string bytes);
  void add_metadata(const std::string& key, const std::string& value);
  std::string serialize() const;
  Status write(const std::string& path) const;

 private:
  struct Tensor { std::string name; DType dtype; std::vector<int64_t> shape; std::string bytes; };
  std::vector<Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kiln
