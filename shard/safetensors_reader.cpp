// SafetensorsFile: parses and validates one .safetensors file (8-byte header length, strict UTF-8
// JSON header, data section) and hands out pointers into the mapped data. Tensors keep the header
// order; layout checks sort them by offset to prove the data is covered exactly once.
#include <algorithm>
#include <cstring>
#include <string_view>

#include <boost/json.hpp>

#include "kernels/base/checked_math.h"
#include "shard/json_strict.h"
#include "shard/safetensors.h"

namespace kiln {
namespace {

namespace bj = boost::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct Parsed {
  std::vector<SafetensorsTensor> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per tensor, data-relative
  std::map<std::string, std::string> metadata;
};

// safetensors dtype names kiln knows of but does not load.
constexpr std::string_view kUnsupportedDtypes[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64", "C64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};

Status parse_dtype(const std::string& tensor, const bj::value& v, DType* out) {
  if (!v.is_string()) return invalid_argument("tensor '{}': dtype is not a string", tensor);
  const std::string_view d(v.get_string().data(), v.get_string().size());
  if (d == "F32") *out = DType::kF32;
  else if (d == "F16") *out = DType::kF16;
  else if (d == "BF16") *out = DType::kBF16;
  else if (std::find(std::begin(kUnsupportedDtypes), std::end(kUnsupportedDtypes), d) !=
           std::end(kUnsupportedDtypes)) {
    return unimplemented("tensor '{}' has dtype {}, which kiln does not support (supported: F32, "
                         "F16, BF16)", tensor, d);
  } else {
    return invalid_argument("tensor '{}' has unknown dtype '{}'", tensor, d);
  }
  return {};
}

// A non-negative JSON integer.
StatusOr<uint64_t> json_uint(const bj::value& v, const std::string& tensor, const char* what) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64()) {
    if (v.get_int64() < 0) {
      return invalid_argument("tensor '{}': {} {} is negative", tensor, what, v.get_int64());
    }
    return static_cast<uint64_t>(v.get_int64());
  }
  return invalid_argument("tensor '{}': {} is not an integer", tensor, what);
}

Status parse_shape(const std::string& tensor, const bj::value& v, SafetensorsTensor* t,
                   uint64_t* numel) {
  if (!v.is_array()) return invalid_argument("tensor '{}': shape is not an array", tensor);
  std::optional<int64_t> n = 1;
  for (const bj::value& d : v.get_array()) {
    KILN_ASSIGN_OR_RETURN(uint64_t dim, json_uint(d, tensor, "shape entry"));
    if (dim > static_cast<uint64_t>(INT64_MAX)) {
      return invalid_argument("tensor '{}': shape entry {} is too large", tensor, dim);
    }
    t->shape.push_back(static_cast<int64_t>(dim));
    if (n) n = checked_mul(*n, static_cast<int64_t>(dim));
  }
  if (!n) return invalid_argument("tensor '{}': shape element count overflows", tensor);
  *numel = static_cast<uint64_t>(*n);
  return {};
}

Status parse_offsets(const std::string& tensor, const bj::value& v,
                     std::pair<uint64_t, uint64_t>* range) {
  if (!v.is_array() || v.get_array().size() != 2) {
    return invalid_argument("tensor '{}': data_offsets is not an array [begin, end]", tensor);
  }
  KILN_ASSIGN_OR_RETURN(range->first, json_uint(v.get_array()[0], tensor, "data_offsets begin"));
  KILN_ASSIGN_OR_RETURN(range->second, json_uint(v.get_array()[1], tensor, "data_offsets end"));
  if (range->first > range->second) {
    return invalid_argument("tensor '{}': data_offsets begin {} is after end {}", tensor,
                            range->first, range->second);
  }
  return {};
}

Status parse_tensor(const std::string& name, const bj::value& v, Parsed* p) {
  const bj::object* o = v.if_object();
  if (o == nullptr) return invalid_argument("tensor '{}': entry is not a JSON object", name);
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!o->contains(field)) return invalid_argument("tensor '{}' has no '{}'", name, field);
  }
  SafetensorsTensor t;
  t.name = name;
  KILN_RETURN_IF_ERROR(parse_dtype(name, o->at("dtype"), &t.dtype));
  uint64_t numel = 0;
  KILN_RETURN_IF_ERROR(parse_shape(name, o->at("shape"), &t, &numel));
  std::pair<uint64_t, uint64_t> range;
  KILN_RETURN_IF_ERROR(parse_offsets(name, o->at("data_offsets"), &range));
  const auto nbytes = checked_mul(numel, static_cast<uint64_t>(dtype_block_bytes(t.dtype)));
  if (!nbytes) return invalid_argument("tensor '{}': byte size overflows", name);
  if (range.second - range.first != *nbytes) {
    return invalid_argument("tensor '{}': data_offsets [{}, {}) span {} bytes but shape × dtype "
                            "size is {} bytes", name, range.first, range.second,
                            range.second - range.first, *nbytes);
  }
  t.nbytes = *nbytes;
  p->tensors.push_back(std::move(t));
  p->ranges.push_back(range);
  return {};
}

Status parse_metadata(const bj::value& v, Parsed* p) {
  const bj::object* o = v.if_object();
  if (o == nullptr) return invalid_argument("__metadata__ is not a JSON object");
  for (const auto& kv : *o) {
    if (!kv.value().is_string()) {
      return invalid_argument("__metadata__ value of '{}' is not a string",
                              std::string_view(kv.key().data(), kv.key().size()));
    }
    p->metadata.emplace(std::string(kv.key()), std::string(kv.value().get_string()));
  }
  return {};
}

// Sorted by begin, the tensors must tile [0, data_size) with no gap or overlap.
Status check_layout(const Parsed& p, uint64_t data_size) {
  std::vector<size_t> order(p.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p.ranges[a] < p.ranges[b]; });
  uint64_t end = 0;
  const std::string* prev = nullptr;
  for (size_t i : order) {
    const uint64_t begin = p.ranges[i].first;
    const std::string& name = p.tensors[i].name;
    if (begin != end && prev == nullptr) {
      return invalid_argument("tensor '{}' starts at data offset {}; offsets must be contiguous "
                              "from 0", name, begin);
    }
    if (begin > end) {
      return invalid_argument("gap in data offsets: tensor '{}' starts at {} but '{}' ends at {}",
                              name, begin, *prev, end);
    }
    if (begin < end) {
      return invalid_argument("overlapping data offsets: tensor '{}' starts at {} but '{}' ends "
                              "at {}", name, begin, *prev, end);
    }
    end = p.ranges[i].second;
    prev = &name;
  }
  if (end != data_size) {
    return out_of_range("data length mismatch: the tensors end at data offset {} but the data "
                        "section has {} bytes{}", end, data_size,
                        end > data_size ? " (truncated?)" : "");
  }
  return {};
}

Status parse_header(std::string_view text, Parsed* p) {
  KILN_ASSIGN_OR_RETURN(bj::value v, parse_json_strict(text, "header"));
  const bj::object* o = v.if_object();
  if (o == nullptr) return invalid_argument("header is not a JSON object");
  for (const auto& kv : *o) {
    const std::string key(kv.key());
    if (key == "__metadata__") {
      KILN_RETURN_IF_ERROR(parse_metadata(kv.value(), p));
    } else {
      KILN_RETURN_IF_ERROR(parse_tensor(key, kv.value(), p));
    }
  }
  return {};
}

Status parse_safetensors(const MappedFile& f, Parsed* p) {
  uint64_t n = 0;
  if (f.size() < sizeof(n)) {
    return out_of_range("truncated file: {} bytes, too short for the 8-byte header length",
                        f.size());
  }
  std::memcpy(&n, f.data(), sizeof(n));
  if (n > kMaxHeaderBytes) {
    return invalid_argument("header length {} exceeds the {} byte limit", n, kMaxHeaderBytes);
  }
  if (n > f.size() - sizeof(n)) {
    return out_of_range("header length {} exceeds the {} bytes after it (truncated?)", n,
                        f.size() - sizeof(n));
  }
  const char* text = reinterpret_cast<const char*>(f.data()) + sizeof(n);
  KILN_RETURN_IF_ERROR(parse_header(std::string_view(text, static_cast<size_t>(n)), p));
  const uint64_t data_start = sizeof(n) + n;
  KILN_RETURN_IF_ERROR(check_layout(*p, f.size() - data_start));
  for (size_t i = 0; i < p->tensors.size(); ++i) {
    p->tensors[i].data = f.data() + data_start + p->ranges[i].first;
    p->tensors[i].file = f.path();
  }
  return {};
}

}  // namespace

StatusOr<SafetensorsFile> SafetensorsFile::parse(std::shared_ptr<MappedFile> file) {
  Parsed p;
  Status s = parse_safetensors(*file, &p);
  if (!s.ok()) return s.with_context(file->path());
  SafetensorsFile out;
  out.file_ = std::move(file);
  out.tensors_ = std::move(p.tensors);
  out.metadata_ = std::move(p.metadata);
  for (size_t i = 0; i < out.tensors_.size(); ++i) out.index_.emplace(out.tensors_[i].name, i);
  return out;
}

StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse(std::move(file));
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln
