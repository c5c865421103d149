// GgufWriter: serialises metadata and tensors into a GGUF v3 file laid out as llama.cpp writes
// it (kv pairs in insertion order, tensor infos, padding, each tensor's data padded to the
// alignment). It writes what it is given without validating it; GgufFile is the validator.
#include <bit>
#include <cstring>

#include "shard/gguf.h"

namespace kiln {
namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 20;  // as GgufFile accepts

template <typename T>
void put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

void put_string(std::string* out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out->append(s);
}

template <typename T>
std::string pack(const std::vector<T>& v) {
  std::string out;
  for (const T& x : v) put<T>(&out, x);
  return out;
}

void pad_to(std::string* out, uint64_t alignment) {
  out->append((alignment - out->size() % alignment) % alignment, '\0');
}

}  // namespace

void GgufWriter::add_uint32(const std::string& key, uint32_t v) {
  kvs_.push_back({key, GgufValueType::kUint32, GgufValueType::kUint32, pack<uint32_t>({v}), 0});
}
void GgufWriter::add_int32(const std::string& key, int32_t v) {
  kvs_.push_back({key, GgufValueType::kInt32, GgufValueType::kUint32, pack<int32_t>({v}), 0});
}
void GgufWriter::add_uint64(const std::string& key, uint64_t v) {
  kvs_.push_back({key, GgufValueType::kUint64, GgufValueType::kUint32, pack<uint64_t>({v}), 0});
}
void GgufWriter::add_float32(const std::string& key, float v) {
  kvs_.push_back({key, GgufValueType::kFloat32, GgufValueType::kUint32, pack<float>({v}), 0});
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  kvs_.push_back({key, GgufValueType::kBool, GgufValueType::kUint32, pack<uint8_t>({static_cast<uint8_t>(v ? 1 : 0)}),
                  0});
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  std::string payload;
  put_string(&payload, v);
  kvs_.push_back({key, GgufValueType::kString, GgufValueType::kUint32, std::move(payload), 0});
}
void GgufWriter::add_int32_array(const std::string& key, const std::vector<int32_t>& v) {
  kvs_.push_back({key, GgufValueType::kArray, GgufValueType::kInt32, pack(v), v.size()});
}
void GgufWriter::add_uint32_array(const std::string& key, const std::vector<uint32_t>& v) {
  kvs_.push_back({key, GgufValueType::kArray, GgufValueType::kUint32, pack(v), v.size()});
}
void GgufWriter::add_float32_array(const std::string& key, const std::vector<float>& v) {
  kvs_.push_back({key, GgufValueType::kArray, GgufValueType::kFloat32, pack(v), v.size()});
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::string payload;
  for (const std::string& s : v) put_string(&payload, s);
  kvs_.push_back({key, GgufValueType::kArray, GgufValueType::kString, std::move(payload),
                  v.size()});
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type,
                            const std::vector<int64_t>& ne, std::string bytes) {
  tensors_.push_back({name, type, ne, std::move(bytes)});
}

std::string GgufWriter::serialize() const {
  // Honour a caller-set general.alignment when readers accept it; otherwise pad to the default.
  uint64_t alignment = kDefaultAlignment;
  for (const Kv& kv : kvs_) {
    if (kv.key != "general.alignment" || kv.type != GgufValueType::kUint32) continue;
    uint32_t a = 0;
    std::memcpy(&a, kv.payload.data(), sizeof(a));
    if (std::has_single_bit(a) && a <= kMaxAlignment) alignment = a;
  }
  std::string out = "GGUF";
  put<uint32_t>(&out, 3);
  put<uint64_t>(&out, tensors_.size());
  put<uint64_t>(&out, kvs_.size());
  for (const Kv& kv : kvs_) {
    put_string(&out, kv.key);
    put<uint32_t>(&out, static_cast<uint32_t>(kv.type));
    if (kv.type == GgufValueType::kArray) {
      put<uint32_t>(&out, static_cast<uint32_t>(kv.array_type));
      put<uint64_t>(&out, kv.count);
    }
    out += kv.payload;
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(&out, t.name);
    put<uint32_t>(&out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<int64_t>(&out, d);
    put<uint32_t>(&out, static_cast<uint32_t>(t.type));
    put<uint64_t>(&out, offset);
    offset += (t.bytes.size() + alignment - 1) / alignment * alignment;
  }
  pad_to(&out, alignment);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    pad_to(&out, alignment);
  }
  return out;
}

Status GgufWriter::write(const std::string& path) const { return write_file(path, serialize()); }

}  // namespace kiln
