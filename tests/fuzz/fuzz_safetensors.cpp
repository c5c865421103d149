// libFuzzer target for the safetensors header parser: any input must parse or fail with a
// Status, never crash or read out of bounds. Accepted files have every tensor's bytes touched.
#include <cstddef>
#include <cstdint>
#include <string>

#include "shard/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = kiln::MappedFile::from_bytes(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  auto f = kiln::SafetensorsFile::parse(std::move(file));
  if (!f.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const kiln::SafetensorsTensor& t : f->tensors()) {
    if (t.nbytes == 0) continue;
    sink = sink ^ static_cast<uint8_t>(t.data[0]) ^ static_cast<uint8_t>(t.data[t.nbytes - 1]);
  }
  return 0;
}
