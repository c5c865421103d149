// Fuzz target for the tokenizer: any byte string must encode (with and without special-token
// matching) and decode back to itself, never crash or hang. Uses the micro GGUF vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cluster/text/tokenizer.h"

namespace {
const kiln::text::Tokenizer& tokenizer() {
  static const kiln::text::Tokenizer* t = [] {
    auto g = kiln::GgufFile::open(KILN_FUZZ_VOCAB);
    if (!g.ok()) std::abort();
    auto tok = kiln::text::Tokenizer::from_gguf(*g);
    if (!tok.ok()) std::abort();
    return new kiln::text::Tokenizer(std::move(tok).value());
  }();
  return *t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tokenizer().encode(text, special);
    if (tokenizer().decode(ids) != text) std::abort();  // byte-level BPE is lossless
  }
  return 0;
}
