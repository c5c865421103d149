// SafetensorsWriter: builds a .safetensors file the way the reference implementation does:
// "__metadata__" first, tensors in insertion order with contiguous data offsets from 0, and the
// JSON header padded with spaces to a multiple of 8 bytes.
#include <cstring>

#include <boost/json.hpp>

#include "shard/safetensors.h"

namespace kiln {
namespace {

namespace bj = boost::json;

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kQ8_0: return "Q8_0";  // not a safetensors dtype; readers reject it
    case DType::kQ4_K: return "Q4_K";  // likewise
    case DType::kQ6_K: return "Q6_K";
  }
  return "?";
}

}  // namespace

void SafetensorsWriter::add(const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape, std::string bytes) {
  tensors_.push_back({name, dtype, shape, std::move(bytes)});
}

void SafetensorsWriter::add_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::string SafetensorsWriter::serialize() const {
  bj::object header;
  if (!metadata_.empty()) {
    bj::object meta;
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    bj::array shape;
    for (int64_t d : t.shape) shape.push_back(d);
    const uint64_t end = offset + t.bytes.size();
    header[t.name] = bj::object{{"dtype", safetensors_dtype_name(t.dtype)},
                                {"shape", std::move(shape)},
                                {"data_offsets", bj::array{offset, end}}};
    offset = end;
  }
  std::string json = bj::serialize(header);
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, sizeof(n));
  out += json;
  for (const Tensor& t : tensors_) out += t.bytes;
  return out;
}

Status SafetensorsWriter::write(const std::string& path) const { return write_file(path, serialize()); }

}  // namespace kiln
