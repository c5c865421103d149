// A read-only memory-mapped file (opened with open_input_file: regular files only). Checkpoint
// readers hand out pointers into it; keep the shared_ptr alive as long as any view is used.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "kernels/base/status.h"

namespace kiln {

class MappedFile {
 public:
  static StatusOr<std::shared_ptr<MappedFile>> open(const std::string& path);
  // Wraps an in-memory copy (used by tests and fuzzers); the bytes are owned by the object.
  static std::shared_ptr<MappedFile> from_bytes(std::string bytes, std::string name = "<memory>");
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel this process no longer needs the mapped pages it has touched (they stay in
  // the page cache); later reads fault them in again. Used after a rank copied out its slices.
  void release_pages() const;

 private:
  MappedFile() = default;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string path_;
  std::string owned_;
};

// Writes `bytes` to `path` through a temporary file in the same directory renamed into place,
// so a reader never sees a partial file and a failed write leaves any old file intact.
Status write_file(const std::string& path, std::string_view bytes);

}  // namespace kiln
