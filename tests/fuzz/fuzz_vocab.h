// The tokenizer the fuzz targets share: the GGUF vocabulary named by KILN_FUZZ_VOCAB (set by
// tests/fuzz/CMakeLists.txt), loaded once. A file that fails to load aborts the run.
#pragma once

#include <cstdlib>
#include <utility>

#include "text/tokenizer.h"
#include "shard/gguf.h"

inline const kiln::text::Tokenizer& fuzz_tokenizer() {
  static const kiln::text::Tokenizer* t = [] {
    auto g = kiln::GgufFile::open(KILN_FUZZ_VOCAB);
    if (!g.ok()) std::abort();
    auto tok = kiln::text::Tokenizer::from_gguf(*g);
    if (!tok.ok()) std::abort();
    return new kiln::text::Tokenizer(std::move(tok).value());
  }();
  return *t;
}
