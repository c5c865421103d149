// libFuzzer target for the GGUF parser: any input must parse or fail with a Status, never crash,
// read out of bounds or hang. Accepted files are walked fully (metadata getters, tensor bytes).
#include <cstddef>
#include <cstdint>
#include <string>

#include "shard/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = kiln::MappedFile::from_bytes(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
  auto g = kiln::GgufFile::parse(std::move(file));
  if (!g.ok()) return 0;
  for (const auto& [key, value] : g->metadata()) {
    (void)g->get_int(key);
    (void)g->get_float(key);
    (void)g->get_string(key);
    (void)g->get_int_array(key);
    (void)g->get_float_array(key);
    (void)g->get_string_array(key);
  }
  volatile uint8_t sink = 0;
  for (const kiln::GgufTensor& t : g->tensors()) {
    if (t.nbytes == 0) continue;
    sink = sink ^ static_cast<uint8_t>(t.data[0]) ^ static_cast<uint8_t>(t.data[t.nbytes - 1]);
  }
  return 0;
}
