// open_input_file / read_input_file: the one way kiln opens a file it was told to read.
#include "shard/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kiln {
namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a plain file";
}

}  // namespace

InputFile::InputFile(InputFile&& other) noexcept : fd_(other.fd_), size_(other.size_) {
  other.fd_ = -1;
}

InputFile& InputFile::operator=(InputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    size_ = other.size_;
    other.fd_ = -1;
  }
  return *this;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<InputFile> open_input_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO with no writer (or a tty) would otherwise wait forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    const int e = errno;
    return Status(e == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                  fmt::format("{}: cannot open: {}", path, std::strerror(e)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return invalid_argument("{}: cannot stat: {}", path, std::strerror(e));
  }
  InputFile file(fd, static_cast<uint64_t>(st.st_size));  // closes fd on every return below
  if (!S_ISREG(st.st_mode)) {
    return invalid_argument("{}: is {}, not a regular file", path, file_kind(st.st_mode));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return invalid_argument("{}: cannot set blocking mode: {}", path, std::strerror(errno));
  }
  return file;
}

StatusOr<std::string> read_input_file(const std::string& path, uint64_t max_bytes) {
  KILN_ASSIGN_OR_RETURN(InputFile file, open_input_file(path));
  if (file.size() > max_bytes) {
    return invalid_argument("{}: file is {} bytes; at most {} bytes are read from such a file",
                            path, file.size(), max_bytes);
  }
  std::string text;
  text.resize(static_cast<size_t>(file.size()) + 1);  // one byte more sees a file that grew
  size_t used = 0;
  for (;;) {
    if (used == text.size()) {
      if (used > max_bytes) {
        return invalid_argument("{}: file grew past {} bytes while being read", path, max_bytes);
      }
      text.resize(std::min<uint64_t>(max_bytes + 1, used * 2 + 4096));
    }
    const ssize_t n = ::read(file.fd(), text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return invalid_argument("{}: read error: {}", path, std::strerror(errno));
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  text.resize(used);
  return text;
}

}  // namespace kiln
