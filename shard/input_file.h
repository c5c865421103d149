// Files named by the user (model files and shards, the index, config and tokenizer files, chat
// templates, topologies, API key files, token lists): every one is opened here, so none can block
// kiln (a FIFO, a terminal) or make it read without end (/dev/zero, a huge file).
// Not for output files, and not for /proc or /sys files kiln reads about itself.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/base/status.h"

namespace kiln {

// Byte caps for the text files kiln reads whole. Each is far above any real file of its kind
// (Kimi's config.json is 3 KiB, tokenizer_config.json 40 KiB, tiktoken.model 2.8 MiB for 163,840
// tokens, an index 100 KiB) and far below what could strain a host.
inline constexpr uint64_t kMaxJsonFileBytes = uint64_t{16} << 20;     // config, tokenizer_config
inline constexpr uint64_t kMaxVocabFileBytes = uint64_t{64} << 20;    // tiktoken.model
inline constexpr uint64_t kMaxIndexFileBytes = 100'000'000;           // model.safetensors.index.json
inline constexpr uint64_t kMaxTemplateFileBytes = uint64_t{1} << 20;  // chat_template.jinja
inline constexpr uint64_t kMaxTopologyFileBytes = uint64_t{1} << 20;  // topology YAML
inline constexpr uint64_t kMaxKeyFileBytes = uint64_t{1} << 20;       // server.api_key_file
inline constexpr uint64_t kMaxTokenListBytes = uint64_t{64} << 20;    // eval --tokens-file

// An open read-only descriptor of a regular file; closes it on destruction. Move-only.
class InputFile {
 public:
  InputFile() = default;
  InputFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  InputFile(InputFile&& other) noexcept;
  InputFile& operator=(InputFile&& other) noexcept;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile();

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }  // at open time (fstat)

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Opens `path` read-only after following symlinks. Errors name the path: NotFound when it does
// not exist; InvalidArgument when it cannot be read or is not a regular file (a directory, FIFO,
// socket or device). The open never blocks (O_NONBLOCK, dropped again for a regular file) and the
// type is taken from the open descriptor, so a file swapped after a check cannot slip through.
StatusOr<InputFile> open_input_file(const std::string& path);

// The whole content of the regular file `path`, of at most max_bytes bytes. A larger file is an
// InvalidArgument naming the path, its size and the cap; nothing is read then, and a file that
// grows while it is read stops at max_bytes + 1 and is refused the same way.
StatusOr<std::string> read_input_file(const std::string& path, uint64_t max_bytes);

}  // namespace kiln
