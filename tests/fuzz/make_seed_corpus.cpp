// Writes the seed corpus for the fuzz targets (valid files of each kind and a few defective
// ones) into corpus/gguf and corpus/safetensors. Run from tests/fuzz after changing the writers.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/shard/format_fixtures.h"

namespace {

void save(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

}  // namespace

int main() {
  using namespace kiln;
  using namespace kiln::testing_fixtures;
  std::filesystem::create_directories("corpus/gguf");
  std::filesystem::create_directories("corpus/safetensors");
  save("corpus/gguf/full.gguf", full_gguf_writer().serialize());
  save("corpus/gguf/small.gguf", small_gguf_writer().serialize());
  save("corpus/gguf/empty.gguf", GgufWriter().serialize());
  GgufWriter aligned;
  aligned.add_uint32("general.alignment", 64);
  aligned.add_tensor("w", GgmlType::kQ8_0, {32, 2}, q8_0_bytes(64));
  save("corpus/gguf/aligned64.gguf", aligned.serialize());
  std::string truncated = full_gguf_writer().serialize();
  truncated.resize(truncated.size() / 2);
  save("corpus/gguf/truncated.gguf", truncated);
  save("corpus/safetensors/full.safetensors", full_safetensors_writer().serialize());
  save("corpus/safetensors/empty.safetensors", SafetensorsWriter().serialize());
  save("corpus/safetensors/gap.safetensors",
       raw_safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}",
                       f32_bytes(3)));
  return 0;
}
