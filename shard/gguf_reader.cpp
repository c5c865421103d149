// GGUF v2/v3 reader: a bounds-checked cursor over the mapped bytes, the metadata and tensor-info
// parsers, and the data-section layout checks (alignment, contiguity, sizes). Every count and size
// read from the file is checked against the bytes that remain before anything is allocated.
// The typed metadata getters live in gguf_metadata.cpp; the writer in gguf_writer.cpp.
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include "kernels/base/checked_math.h"
#include "shard/gguf.h"
#include "shard/gguf_internal.h"

namespace kiln {
namespace {

static_assert(std::endian::native == std::endian::little, "kiln reads GGUF on little-endian hosts");

constexpr uint64_t kMaxAlignment = uint64_t{1} << 20;
constexpr int kMaxArrayDepth = 8;
// Far above any real vocabulary (~10^5..10^6 entries); bounds the in-memory expansion of arrays.
constexpr uint64_t kMaxArrayElems = uint64_t{1} << 24;
// Smallest possible encodings, used to bound counts read from the file.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                // key length, value type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name, n_dims, ne[0], type, offset

class Cursor {
 public:
  Cursor(const std::byte* data, size_t size) : data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T>
  Status read(T* out, std::string_view what) {
    if (remaining() < sizeof(T)) return truncated(sizeof(T), what);
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return {};
  }

  Status read_string(std::string* out, std::string_view what) {
    uint64_t len = 0;
    KILN_RETURN_IF_ERROR(read(&len, what));
    if (len > remaining()) {
      return out_of_range("{} has length {} but only {} bytes remain at offset {} (truncated?)",
                          what, len, remaining(), pos_);
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return {};
  }

 private:
  Status truncated(size_t need, std::string_view what) const {
    return out_of_range("truncated file: need {} bytes for {} at offset {}, {} left", need, what,
                        pos_, remaining());
  }
  const std::byte* data_;
  size_t size_;
  size_t pos_ = 0;
};

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Encoded size of a scalar value; strings and arrays return their smallest encoding.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString: return 8;
    case GgufValueType::kArray: return 4 + 8;
  }
  return 1;
}

template <typename Stored, typename Wide>
Status read_scalar(Cursor& c, const std::string& key, GgufValue* out) {
  Stored s{};
  KILN_RETURN_IF_ERROR(c.read(&s, fmt::format("the value of key '{}'", key)));
  out->v = static_cast<Wide>(s);
  return {};
}

Status read_value(Cursor& c, GgufValueType type, int depth, const std::string& key,
                  GgufValue* out);

Status read_array(Cursor& c, int depth, const std::string& key, GgufValue* out) {
  if (depth >= kMaxArrayDepth) {
    return invalid_argument("key '{}': arrays nested deeper than {} levels", key, kMaxArrayDepth);
  }
  uint32_t elem_type = 0;
  uint64_t count = 0;
  KILN_RETURN_IF_ERROR(c.read(&elem_type, fmt::format("the array type of key '{}'", key)));
  if (!is_known_value_type(elem_type)) {
    return invalid_argument("key '{}' is an array of unknown value type {}", key, elem_type);
  }
  const auto et = static_cast<GgufValueType>(elem_type);
  KILN_RETURN_IF_ERROR(c.read(&count, fmt::format("the array length of key '{}'", key)));
  if (count > c.remaining() / min_value_bytes(et)) {
    return out_of_range("array '{}' has length {} but only {} bytes remain (truncated?)", key,
                        count, c.remaining());
  }
  if (count > kMaxArrayElems) {
    return invalid_argument("array '{}' has {} elements, more than kiln accepts ({})", key, count,
                            kMaxArrayElems);
  }
  auto arr = std::make_shared<GgufArray>();
  arr->reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    GgufValue& elem = arr->emplace_back();
    elem.type = et;
    KILN_RETURN_IF_ERROR(read_value(c, et, depth + 1, key, &elem));
  }
  out->array_type = et;
  out->v = std::move(arr);
  return {};
}

Status read_value(Cursor& c, GgufValueType type, int depth, const std::string& key,
                  GgufValue* out) {
  out->type = type;
  switch (type) {
    case GgufValueType::kUint8: return read_scalar<uint8_t, uint64_t>(c, key, out);
    case GgufValueType::kInt8: return read_scalar<int8_t, int64_t>(c, key, out);
    case GgufValueType::kUint16: return read_scalar<uint16_t, uint64_t>(c, key, out);
    case GgufValueType::kInt16: return read_scalar<int16_t, int64_t>(c, key, out);
    case GgufValueType::kUint32: return read_scalar<uint32_t, uint64_t>(c, key, out);
    case GgufValueType::kInt32: return read_scalar<int32_t, int64_t>(c, key, out);
    case GgufValueType::kUint64: return read_scalar<uint64_t, uint64_t>(c, key, out);
    case GgufValueType::kInt64: return read_scalar<int64_t, int64_t>(c, key, out);
    case GgufValueType::kFloat32: return read_scalar<float, double>(c, key, out);
    case GgufValueType::kFloat64: return read_scalar<double, double>(c, key, out);
    case GgufValueType::kBool: {
      uint8_t b = 0;
      KILN_RETURN_IF_ERROR(c.read(&b, fmt::format("the value of key '{}'", key)));
      if (b > 1) return invalid_argument("key '{}' has bool value {} (must be 0 or 1)", key, b);
      out->v = b == 1;
      return {};
    }
    case GgufValueType::kString: {
      std::string s;
      KILN_RETURN_IF_ERROR(c.read_string(&s, fmt::format("the string value of key '{}'", key)));
      out->v = std::move(s);
      return {};
    }
    case GgufValueType::kArray: return read_array(c, depth, key, out);
  }
  return invalid_argument("key '{}' has unknown value type {}", key, static_cast<uint32_t>(type));
}

struct Header {
  uint32_t version = 0;
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
};

Status read_header(Cursor& c, Header* h) {
  char magic[4] = {};
  KILN_RETURN_IF_ERROR(c.read(&magic, "the magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return invalid_argument("bad magic: not a GGUF file (first bytes {:02x} {:02x} {:02x} {:02x})",
                            static_cast<uint8_t>(magic[0]), static_cast<uint8_t>(magic[1]),
                            static_cast<uint8_t>(magic[2]), static_cast<uint8_t>(magic[3]));
  }
  KILN_RETURN_IF_ERROR(c.read(&h->version, "the version"));
  if (h->version != 2 && h->version != 3) {
    return unimplemented("unsupported GGUF version {} (kiln reads versions 2 and 3)", h->version);
  }
  KILN_RETURN_IF_ERROR(c.read(&h->tensor_count, "the tensor count"));
  KILN_RETURN_IF_ERROR(c.read(&h->kv_count, "the kv count"));
  if (h->kv_count > c.remaining() / kMinKvBytes) {
    return out_of_range("kv count {} cannot fit in the {} bytes that remain", h->kv_count,
                        c.remaining());
  }
  // Tensor infos follow the kv pairs, so the kv pairs' bytes are subtracted later as well.
  if (h->tensor_count > c.remaining() / kMinTensorInfoBytes) {
    return out_of_range("tensor count {} cannot fit in the {} bytes that remain", h->tensor_count,
                        c.remaining());
  }
  return {};
}

Status read_kvs(Cursor& c, uint64_t count, std::map<std::string, GgufValue>* kv) {
  for (uint64_t i = 0; i < count; ++i) {
    std::string key;
    KILN_RETURN_IF_ERROR(c.read_string(&key, fmt::format("the name of key #{}", i)));
    uint32_t type = 0;
    KILN_RETURN_IF_ERROR(c.read(&type, fmt::format("the value type of key '{}'", key)));
    if (!is_known_value_type(type)) {
      return invalid_argument("key '{}' has unknown value type {}", key, type);
    }
    GgufValue value;
    KILN_RETURN_IF_ERROR(read_value(c, static_cast<GgufValueType>(type), 0, key, &value));
    if (!kv->emplace(std::move(key), std::move(value)).second) {
      // `key` was not moved from: emplace leaves its arguments alone when the key exists.
      return invalid_argument("duplicate key '{}' (kv #{})", key, i);
    }
  }
  return {};
}

StatusOr<uint64_t> read_alignment(const std::map<std::string, GgufValue>& kv) {
  auto it = kv.find("general.alignment");
  if (it == kv.end()) return uint64_t{32};
  if (it->second.type != GgufValueType::kUint32) {
    return invalid_argument("general.alignment must be a uint32, found {}",
                            gguf_value_type_name(it->second));
  }
  const uint64_t a = std::get<uint64_t>(it->second.v);
  if (a == 0 || !std::has_single_bit(a) || a > kMaxAlignment) {
    return invalid_argument("general.alignment {} is invalid (must be a power of two in 1..{})", a,
                            kMaxAlignment);
  }
  return a;
}

// Computes nbytes for `t` from its type and dims, rejecting unsupported types and overflow.
Status size_tensor(GgufTensor* t, uint32_t type) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  if (info == nullptr) return invalid_argument("tensor '{}': unknown ggml type {}", t->name, type);
  if (!info->supported) {
    return unimplemented(
        "tensor '{}' has type {}, which kiln does not support yet (supported: F32, F16, BF16, "
        "Q8_0, Q4_K, Q6_K)", t->name, info->name);
  }
  t->type = static_cast<GgmlType>(type);
  t->dtype = info->dtype;
  if (t->ne[0] % info->block_elems != 0) {
    return invalid_argument("tensor '{}' of type {} has ne[0] = {}, not a multiple of the block "
                            "size {}", t->name, info->name, t->ne[0], info->block_elems);
  }
  std::optional<uint64_t> bytes = static_cast<uint64_t>(t->ne[0] / info->block_elems);
  bytes = checked_mul(*bytes, static_cast<uint64_t>(info->block_bytes));
  std::optional<int64_t> elems = t->ne[0];
  for (size_t d = 1; d < t->ne.size() && bytes && elems; ++d) {
    bytes = checked_mul(*bytes, static_cast<uint64_t>(t->ne[d]));
    elems = checked_mul(*elems, t->ne[d]);
  }
  if (!elems) return invalid_argument("tensor '{}': element count overflows", t->name);
  if (!bytes || *bytes > std::numeric_limits<uint64_t>::max() / 2) {
    return invalid_argument("tensor '{}': byte size overflows", t->name);
  }
  t->nbytes = *bytes;
  return {};
}

Status read_tensor_info(Cursor& c, uint64_t index, GgufTensor* t) {
  KILN_RETURN_IF_ERROR(c.read_string(&t->name, fmt::format("the name of tensor #{}", index)));
  uint32_t n_dims = 0;
  KILN_RETURN_IF_ERROR(c.read(&n_dims, fmt::format("n_dims of tensor '{}'", t->name)));
  if (n_dims == 0 || n_dims > 4) {
    return invalid_argument("tensor '{}' has n_dims {} (must be 1..4)", t->name, n_dims);
  }
  t->ne.resize(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    KILN_RETURN_IF_ERROR(c.read(&t->ne[d], fmt::format("ne[{}] of tensor '{}'", d, t->name)));
    if (t->ne[d] <= 0) {
      return invalid_argument("tensor '{}' has dimension ne[{}] = {} (dims must be positive)",
                              t->name, d, t->ne[d]);
    }
  }
  uint32_t type = 0;
  KILN_RETURN_IF_ERROR(c.read(&type, fmt::format("the type of tensor '{}'", t->name)));
  KILN_RETURN_IF_ERROR(c.read(&t->offset, fmt::format("the offset of tensor '{}'", t->name)));
  return size_tensor(t, type);
}

// Checks each tensor lies inside the data section, aligned and contiguous in info order (each
// tensor starts where the previous one ends, padded to the alignment, as llama.cpp requires), and
// that the section holds the padding after the last tensor too, so any truncation is caught.
Status place_tensors(const std::byte* data, uint64_t data_size, uint64_t alignment,
                     std::vector<GgufTensor>* tensors) {
  uint64_t expected = 0;
  for (GgufTensor& t : *tensors) {
    if (t.offset % alignment != 0) {
      return invalid_argument("tensor '{}' has offset {}, misaligned (not a multiple of the "
                              "alignment {})", t.name, t.offset, alignment);
    }
    if (t.offset > data_size) {
      return out_of_range("tensor '{}' has offset {}, out of range: the data section has {} "
                          "bytes", t.name, t.offset, data_size);
    }
    if (t.nbytes > data_size - t.offset) {
      return out_of_range("data section too short: tensor '{}' needs bytes [{}, {}) but the data "
                          "section has {} bytes (truncated?)", t.name, t.offset,
                          t.offset + t.nbytes, data_size);
    }
    if (t.offset != expected) {
      return invalid_argument("tensor '{}' has offset {}, expected {} (tensor data must follow "
                              "the previous tensor, padded to the alignment)", t.name, t.offset,
                              expected);
    }
    const uint64_t padded = (t.nbytes + alignment - 1) / alignment * alignment;
    expected = t.offset + padded;  // <= data_size + alignment: no overflow
    t.data = data + t.offset;
  }
  if (expected > data_size) {
    return out_of_range("data section too short: {} bytes, the tensors need {} including the "
                        "alignment padding after the last one (truncated?)", data_size, expected);
  }
  return {};
}

struct Parsed {
  uint32_t version = 0;
  uint64_t alignment = 32;
  std::map<std::string, GgufValue> kv;
  std::vector<GgufTensor> tensors;
  std::map<std::string, size_t> tensor_index;
};

Status parse_gguf(const MappedFile& f, Parsed* g) {
  Cursor c(f.data(), f.size());
  Header h;
  KILN_RETURN_IF_ERROR(read_header(c, &h));
  g->version = h.version;
  KILN_RETURN_IF_ERROR(read_kvs(c, h.kv_count, &g->kv));
  KILN_ASSIGN_OR_RETURN(g->alignment, read_alignment(g->kv));
  if (h.tensor_count > c.remaining() / kMinTensorInfoBytes) {
    return out_of_range("tensor count {} cannot fit in the {} bytes that remain", h.tensor_count,
                        c.remaining());
  }
  g->tensors.resize(static_cast<size_t>(h.tensor_count));
  for (uint64_t i = 0; i < h.tensor_count; ++i) {
    GgufTensor& t = g->tensors[static_cast<size_t>(i)];
    KILN_RETURN_IF_ERROR(read_tensor_info(c, i, &t));
    if (!g->tensor_index.emplace(t.name, static_cast<size_t>(i)).second) {
      return invalid_argument("duplicate tensor name '{}' (tensor #{})", t.name, i);
    }
  }
  if (h.tensor_count == 0) return {};  // vocabulary-only files may end without padding
  const uint64_t data_start = (c.pos() + g->alignment - 1) / g->alignment * g->alignment;
  if (data_start > f.size()) {
    return out_of_range("data section too short: it starts at {} (aligned to {}) but the file "
                        "has {} bytes (truncated?)", data_start, g->alignment, f.size());
  }
  return place_tensors(f.data() + data_start, f.size() - data_start, g->alignment, &g->tensors);
}

}  // namespace

StatusOr<GgufFile> GgufFile::parse(std::shared_ptr<MappedFile> file) {
  Parsed p;
  Status s = parse_gguf(*file, &p);
  if (!s.ok()) return s.with_context(file->path());
  GgufFile g;
  g.file_ = std::move(file);
  g.version_ = p.version;
  g.alignment_ = p.alignment;
  g.kv_ = std::move(p.kv);
  g.tensors_ = std::move(p.tensors);
  g.tensor_index_ = std::move(p.tensor_index);
  return g;
}

StatusOr<GgufFile> GgufFile::open(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse(std::move(file));
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln
