// GGUF v3 reader and writer. The reader validates everything it reads from the file (magic,
// version, counts, string/array lengths, types, dims, alignment, offsets, sizes) with checked
// arithmetic and rejects what it cannot honour with a message naming the key/tensor and reason.
// Tensor types accepted: F32, F16, BF16, Q8_0; any other ggml type is rejected by name.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/mapped_file.h"

namespace kiln {

// ggml tensor type ids as stored in GGUF.
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kBF16 = 30,
};
// "F32", "Q4_K", ... or "type 99" for an id kiln does not know.
std::string ggml_type_name(uint32_t type);

// GGUF metadata value types.
enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
// Integers are widened to int64/uint64 in memory but remember their stored type.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint32;
  std::variant<int64_t, uint64_t, double, bool, std::string, std::shared_ptr<GgufArray>> v;
  GgufValueType array_type = GgufValueType::kUint32;  // element type when type == kArray
};

struct GgufTensor {
  std::string name;
  GgmlType type;
  DType dtype;                  // the kiln dtype of `type`
  std::vector<int64_t> ne;      // ggml order: ne[0] fastest
  uint64_t offset = 0;          // relative to the data section
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Memory-maps and validates the file at `path`. Errors are prefixed with the path.
  static StatusOr<GgufFile> open(const std::string& path);
  static StatusOr<GgufFile> parse(std::shared_ptr<MappedFile> file);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufValue* find(const std::string& key) const;
  const GgufTensor* find_tensor(const std::string& name) const;

  // Typed getters: NotFound when missing, InvalidArgument naming the key when the type does not
  // fit (any integer type is accepted for integers if the value fits).
  StatusOr<int64_t> get_int(const std::string& key) const;
  StatusOr<double> get_float(const std::string& key) const;
  StatusOr<bool> get_bool(const std::string& key) const;
  StatusOr<std::string> get_string(const std::string& key) const;
  StatusOr<std::vector<int64_t>> get_int_array(const std::string& key) const;
  StatusOr<std::vector<double>> get_float_array(const std::string& key) const;
  StatusOr<std::vector<std::string>> get_string_array(const std::string& key) const;

  const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in the layout llama.cpp writes: header, kv pairs in insertion order,
// tensor infos, padding to `general.alignment` (32), tensor data each aligned.
class GgufWriter {
 public:
  void add_uint32(const std::string& key, uint32_t v);
  void add_int32(const std::string& key, int32_t v);
  void add_uint64(const std::string& key, uint64_t v);
  void add_float32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_int32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_uint32_array(const std::string& key, const std::vector<uint32_t>& v);
  void add_float32_array(const std::string& key, const std::vector<float>& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  // `ne` in ggml order; `bytes` must hold exactly the tensor's size for `type`.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                  std::string bytes);
  // Serialises everything; write() puts it in a file.
  std::string serialize() const;
  Status write(const std::string& path) const;

 private:
  struct Kv { std::string key; GgufValueType type; GgufValueType array_type; std::string payload; uint64_t count; };
  struct Tensor { std::string name; GgmlType type; std::vector<int64_t> ne; std::string bytes; };
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace kiln
