// Fuzz target for the tokenizer: any byte string must encode (with and without special-token
// matching) and decode back to itself, never crash or hang. Uses the micro GGUF vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "text/tokenizer.h"
#include "fuzz_vocab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = fuzz_tokenizer().encode(text, special);
    if (fuzz_tokenizer().decode(ids) != text) std::abort();  // byte-level BPE is lossless
  }
  return 0;
}
