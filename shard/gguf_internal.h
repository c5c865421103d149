// Helpers shared by the GGUF reader, metadata getters and writer; not part of kiln's API.
// The ggml type table lists every type id kiln can name; only F32, F16, BF16 and Q8_0 are
// marked supported.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/base/dtype.h"
#include "shard/gguf.h"

namespace kiln {

struct GgmlTypeInfo {
  uint32_t id;
  const char* name;
  int64_t block_elems;  // elements per block along ne[0]
  int64_t block_bytes;  // 0 where kiln does not need it (unsupported types)
  bool supported;
  DType dtype;          // meaningful only when supported
};

// nullptr for an id kiln does not know.
const GgmlTypeInfo* ggml_type_info(uint32_t id);

// "uint32", "string", "array of float32", ...
std::string gguf_value_type_name(const GgufValue& v);
std::string gguf_value_type_name(GgufValueType t);

}  // namespace kiln
