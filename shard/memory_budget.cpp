// available_memory_bytes: /proc/meminfo and the cgroup v2 limit, read on each call.
#include "shard/memory_budget.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <fstream>
#include <string>

namespace kiln {
namespace {

// The first number in the file, or nullopt ("max", missing file, garbage).
std::optional<uint64_t> read_number(const char* path) {
  std::ifstream in(path);  // a /proc or /sys file of the host, not a user input
  std::string text;
  if (!(in >> text)) return std::nullopt;
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<uint64_t> meminfo_available() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return std::nullopt;
}

}  // namespace

uint64_t available_memory_bytes() {
  uint64_t avail = 0;
  if (auto m = meminfo_available()) {
    avail = *m;
  } else {
    const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    avail = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  }
  const auto limit = read_number("/sys/fs/cgroup/memory.max");
  const auto used = read_number("/sys/fs/cgroup/memory.current");
  if (limit && used) avail = std::min(avail, *limit > *used ? *limit - *used : 0);
  return avail;
}

Status check_host_allocation(uint64_t bytes, const std::string& what) {
  const uint64_t avail = available_memory_bytes();
  if (bytes <= avail) return {};
  return {StatusCode::kResourceExhausted,
          fmt::format("{} needs {} but {} of memory is available", what, format_byte_count(bytes),
                      format_byte_count(avail))};
}

std::string format_byte_count(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double b = static_cast<double>(bytes);
  int u = 0;
  while (b >= 1024.0 && u < 6) b /= 1024.0, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {} ({} bytes)", b, units[u], bytes);
}

}  // namespace kiln
