// GGUF type tables (ggml tensor types, metadata value types) and GgufFile's typed metadata
// getters. Getters accept any stored integer width for integers (if the value fits int64) and
// float32/float64 for floats; every error names the file and the key.
#include <array>
#include <limits>

#include "shard/gguf.h"
#include "shard/gguf_internal.h"

namespace kiln {
namespace {

constexpr std::array<GgmlTypeInfo, 31> kGgmlTypes = {{
    {0, "F32", 1, 4, true, DType::kF32},         {1, "F16", 1, 2, true, DType::kF16},
    {2, "Q4_0", 32, 18, false, DType::kF32},     {3, "Q4_1", 32, 20, false, DType::kF32},
    {6, "Q5_0", 32, 22, false, DType::kF32},     {7, "Q5_1", 32, 24, false, DType::kF32},
    {8, "Q8_0", 32, 34, true, DType::kQ8_0},     {9, "Q8_1", 32, 36, false, DType::kF32},
    {10, "Q2_K", 256, 84, false, DType::kF32},   {11, "Q3_K", 256, 110, false, DType::kF32},
    {12, "Q4_K", 256, 144, true, DType::kQ4_K},  {13, "Q5_K", 256, 176, false, DType::kF32},
    {14, "Q6_K", 256, 210, true, DType::kQ6_K},  {15, "Q8_K", 256, 292, false, DType::kF32},
    {16, "IQ2_XXS", 256, 0, false, DType::kF32}, {17, "IQ2_XS", 256, 0, false, DType::kF32},
    {18, "IQ3_XXS", 256, 0, false, DType::kF32}, {19, "IQ1_S", 256, 0, false, DType::kF32},
    {20, "IQ4_NL", 32, 0, false, DType::kF32},   {21, "IQ3_S", 256, 0, false, DType::kF32},
    {22, "IQ2_S", 256, 0, false, DType::kF32},   {23, "IQ4_XS", 256, 0, false, DType::kF32},
    {24, "I8", 1, 1, false, DType::kF32},        {25, "I16", 1, 2, false, DType::kF32},
    {26, "I32", 1, 4, false, DType::kF32},       {27, "I64", 1, 8, false, DType::kF32},
    {28, "F64", 1, 8, false, DType::kF32},       {29, "IQ1_M", 256, 0, false, DType::kF32},
    {30, "BF16", 1, 2, true, DType::kBF16},      {34, "TQ1_0", 256, 0, false, DType::kF32},
    {35, "TQ2_0", 256, 0, false, DType::kF32},
}};

bool is_signed_int(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
bool is_unsigned_int(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 ||
         t == GgufValueType::kUint32 || t == GgufValueType::kUint64;
}
bool is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

Status wrong_type(const std::string& key, const GgufValue& v, const char* expected) {
  return invalid_argument("key '{}' has type {}, expected {}", key, gguf_value_type_name(v),
                          expected);
}

Status to_int(const GgufValue& v, const std::string& key, int64_t* out) {
  if (is_signed_int(v.type)) {
    *out = std::get<int64_t>(v.v);
    return {};
  }
  if (is_unsigned_int(v.type)) {
    const uint64_t u = std::get<uint64_t>(v.v);
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return invalid_argument("key '{}' has value {}, which does not fit int64", key, u);
    }
    *out = static_cast<int64_t>(u);
    return {};
  }
  return wrong_type(key, v, "an integer");
}

// The array behind `key` if its elements pass `elem_ok`.
StatusOr<const GgufArray*> typed_array(const GgufValue& v, const std::string& key,
                                       bool (*elem_ok)(GgufValueType), const char* expected) {
  if (v.type != GgufValueType::kArray || !elem_ok(v.array_type)) {
    return wrong_type(key, v, expected);
  }
  return std::get<std::shared_ptr<GgufArray>>(v.v).get();
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const GgmlTypeInfo& t : kGgmlTypes) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeInfo* t = ggml_type_info(type);
  return t != nullptr ? std::string(t->name) : fmt::format("type {}", type);
}

std::string gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return fmt::format("value type {}", static_cast<uint32_t>(t));
}

std::string gguf_value_type_name(const GgufValue& v) {
  if (v.type != GgufValueType::kArray) return gguf_value_type_name(v.type);
  return "array of " + gguf_value_type_name(v.array_type);
}

StatusOr<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  int64_t out = 0;
  Status s = to_int(*v, key, &out);
  if (!s.ok()) return s.with_context(file_->path());
  return out;
}

StatusOr<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  if (!is_float(v->type)) return wrong_type(key, *v, "a float").with_context(file_->path());
  return std::get<double>(v->v);
}

StatusOr<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  if (v->type != GgufValueType::kBool) {
    return wrong_type(key, *v, "a bool").with_context(file_->path());
  }
  return std::get<bool>(v->v);
}

StatusOr<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  if (v->type != GgufValueType::kString) {
    return wrong_type(key, *v, "a string").with_context(file_->path());
  }
  return std::get<std::string>(v->v);
}

StatusOr<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  auto ok = [](GgufValueType t) { return is_signed_int(t) || is_unsigned_int(t); };
  auto arr = typed_array(*v, key, ok, "an integer array");
  if (!arr.ok()) return arr.status().with_context(file_->path());
  std::vector<int64_t> out((*arr)->size());
  for (size_t i = 0; i < out.size(); ++i) {
    Status s = to_int((**arr)[i], fmt::format("{}[{}]", key, i), &out[i]);
    if (!s.ok()) return s.with_context(file_->path());
  }
  return out;
}

StatusOr<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  auto arr = typed_array(*v, key, is_float, "a float array");
  if (!arr.ok()) return arr.status().with_context(file_->path());
  std::vector<double> out;
  out.reserve((*arr)->size());
  for (const GgufValue& e : **arr) out.push_back(std::get<double>(e.v));
  return out;
}

StatusOr<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found("{}: key '{}' not found", file_->path(), key);
  auto ok = [](GgufValueType t) { return t == GgufValueType::kString; };
  auto arr = typed_array(*v, key, ok, "a string array");
  if (!arr.ok()) return arr.status().with_context(file_->path());
  std::vector<std::string> out;
  out.reserve((*arr)->size());
  for (const GgufValue& e : **arr) out.push_back(std::get<std::string>(e.v));
  return out;
}

}  // namespace kiln
