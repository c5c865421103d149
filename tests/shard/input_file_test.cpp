// open_input_file / read_input_file / MappedFile::open against what a user may name instead of a
// file: a FIFO (refused at once, never waited on), a directory, /dev/zero through a symlink, a
// dangling or looping symlink, a file over its size cap; and the memory budget checks.
#include "shard/input_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "shard/mapped_file.h"
#include "shard/memory_budget.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("kiln_input_file_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const char* name) const { return (path / name).string(); }
};

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool has(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

TEST(InputFile, ReadsARegularFileAndOneThroughASymlink) {
  TempDir d;
  write(d / "a.json", "{\"x\": 1}");
  fs::create_symlink(d / "a.json", d / "link.json");
  for (const char* name : {"a.json", "link.json"}) {
    auto text = read_input_file(d / name, 100);
    ASSERT_TRUE(text.ok()) << text.status().to_string();
    EXPECT_EQ(*text, "{\"x\": 1}");
  }
  auto empty = (write(d / "empty", ""), read_input_file(d / "empty", 0));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
}

TEST(InputFile, SizeCapIsExactAndNamesFileSizeAndCap) {
  TempDir d;
  write(d / "ten", "0123456789");
  EXPECT_TRUE(read_input_file(d / "ten", 10).ok());
  auto over = read_input_file(d / "ten", 9);
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(has(over.status(), d / "ten")) << over.status().message();
  EXPECT_TRUE(has(over.status(), "file is 10 bytes; at most 9 bytes")) << over.status().message();
  // A sparse file far over the cap is refused from its size, without reading it.
  { std::ofstream(d / "sparse"); }
  fs::resize_file(d / "sparse", uint64_t{1} << 40);
  auto sparse = read_input_file(d / "sparse", kMaxJsonFileBytes);
  ASSERT_FALSE(sparse.ok());
  EXPECT_TRUE(has(sparse.status(), "file is 1099511627776 bytes")) << sparse.status().message();
}

TEST(InputFile, FifoIsRefusedAtOnce) {
  TempDir d;
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  auto text = read_input_file(d / "fifo", 100);
  auto mapped = MappedFile::open(d / "fifo");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_FALSE(text.ok());
  ASSERT_FALSE(mapped.ok());
  for (const Status& s : {text.status(), mapped.status()}) {
    EXPECT_TRUE(has(s, d / "fifo")) << s.message();
    EXPECT_TRUE(has(s, "is a FIFO, not a regular file")) << s.message();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  }
}

TEST(InputFile, DirectoryDeviceAndBrokenLinksAreRefusedWithTheirPath) {
  TempDir d;
  fs::create_directory(d / "dir");
  fs::create_symlink("/dev/zero", d / "zero");
  fs::create_symlink(d / "absent", d / "dangling");
  fs::create_symlink("loop", d / "loop");
  const std::pair<const char*, const char*> cases[] = {
      {"dir", "is a directory"}, {"zero", "is a character device"},
      {"dangling", "cannot open: No such file"}, {"loop", "cannot open: Too many levels"},
      {"absent", "cannot open: No such file"}};
  for (const auto& [name, why] : cases) {
    auto text = read_input_file(d / name, 100);
    auto mapped = MappedFile::open(d / name);
    ASSERT_FALSE(text.ok()) << name;
    ASSERT_FALSE(mapped.ok()) << name;
    EXPECT_TRUE(has(text.status(), d / name) && has(text.status(), why)) << text.status().message();
    EXPECT_TRUE(has(mapped.status(), d / name) && has(mapped.status(), why))
        << mapped.status().message();
  }
  EXPECT_EQ(read_input_file(d / "absent", 1).status().code(), StatusCode::kNotFound);
}

TEST(MemoryBudget, AvailableMemoryIsReadAndChecked) {
  const uint64_t avail = available_memory_bytes();
  EXPECT_GT(avail, uint64_t{0});
  EXPECT_TRUE(check_host_allocation(1, "one byte").ok());
  Status s = check_host_allocation(UINT64_MAX, "the thing");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(has(s, "the thing needs 16.00 EiB (18446744073709551615 bytes) but ")) << s.message();
  EXPECT_TRUE(has(s, "of memory is available")) << s.message();
}

}  // namespace
}  // namespace kiln
