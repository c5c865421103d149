// Replays a fuzz target's corpus without libFuzzer (for compilers that lack it): every file under
// the given directories is passed once to LLVMFuzzerTestOneInput. A crash fails the test.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    std::filesystem::recursive_directory_iterator it(argv[i], ec);
    if (ec) {
      std::fprintf(stderr, "cannot read corpus directory %s: %s\n", argv[i], ec.message().c_str());
      return 1;
    }
    for (const auto& entry : it) {
      if (!entry.is_regular_file()) continue;
      std::ifstream f(entry.path(), std::ios::binary);
      std::string bytes(static_cast<size_t>(entry.file_size()), '\0');
      f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++files;
    }
  }
  std::printf("replayed %d inputs\n", files);
  return files > 0 ? 0 : 1;
}
