// Checkpoint: format detection and the uniform tensor table over GGUF and safetensors.
#include "shard/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <new>

#include "shard/gguf.h"
#include "shard/safetensors.h"

namespace kiln {
namespace fs = std::filesystem;

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> TensorRef::squeezed() const {
  std::vector<int64_t> out;
  for (int64_t d : shape) {
    if (d != 1) out.push_back(d);
  }
  return out;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Checkpoint::~Checkpoint() = default;

// Tables built from the file's headers are bounded by its size, but an allocation failure is
// still an error naming the file, not an uncaught exception.
StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::open(const std::string& path) try {
  std::error_code ec;
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  ck->path_ = path;
  if (fs::is_directory(path, ec)) {
    KILN_ASSIGN_OR_RETURN(ck->config_, load_hf_config((fs::path(path) / "config.json").string()));
    KILN_ASSIGN_OR_RETURN(SafetensorsSet set, SafetensorsSet::open_dir(path));
    ck->safetensors_ = std::make_unique<SafetensorsSet>(std::move(set));
    for (const std::string& name : ck->safetensors_->names()) {
      const SafetensorsTensor* t = ck->safetensors_->find(name);
      ck->tensors_.push_back({t->name, t->dtype, t->shape, t->data, t->nbytes});
    }
  } else if (fs::exists(path, ec)) {  // GgufFile::open refuses what is not a regular file
    KILN_ASSIGN_OR_RETURN(GgufFile g, GgufFile::open(path));
    ck->gguf_ = std::make_unique<GgufFile>(std::move(g));
    auto cfg = config_from_gguf(*ck->gguf_);
    if (!cfg.ok()) return cfg.status().with_context(path);
    ck->config_ = std::move(cfg).value();
    for (const GgufTensor& t : ck->gguf_->tensors()) {
      std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
      ck->tensors_.push_back({t.name, t.dtype, shape, t.data, t.nbytes});
    }
  } else {
    return not_found("model path '{}' is neither an HF directory nor a GGUF file", path);
  }
  for (size_t i = 0; i < ck->tensors_.size(); ++i) {
    ck->sorted_index_.emplace_back(ck->tensors_[i].name, i);
  }
  std::sort(ck->sorted_index_.begin(), ck->sorted_index_.end());
  if (ck->gguf_) KILN_RETURN_IF_ERROR(ck->infer_gguf_kda_heads());
  return ck;
} catch (const std::bad_alloc&) {
  return Status(StatusCode::kResourceExhausted,
                fmt::format("{}: out of memory while reading the checkpoint's headers", path));
}

// GGUF metadata has no KDA head count (llama.cpp takes it from attention.head_count); the
// per-head ssm_a tensor of the first KDA layer is authoritative.
Status Checkpoint::infer_gguf_kda_heads() {
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    if (!config_.is_kda(i)) continue;
    const TensorRef* a = find(fmt::format("blk.{}.ssm_a", i));
    if (a == nullptr) return {};  // reported as a missing tensor when the weights load
    config_.kda_num_heads = a->numel();
    Status s = config_.validate();
    return s.ok() ? s : s.with_context(path_);
  }
  return {};
}

const TensorRef* Checkpoint::find(const std::string& name) const {
  auto it = std::lower_bound(sorted_index_.begin(), sorted_index_.end(),
                             std::pair<std::string, size_t>(name, 0));
  if (it == sorted_index_.end() || it->first != name) return nullptr;
  return &tensors_[it->second];
}

void Checkpoint::release_pages() const {
  if (gguf_) gguf_->file()->release_pages();
  if (safetensors_) safetensors_->release_pages();
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const TensorRef& t : tensors_) n += t.nbytes;
  return n;
}

}  // namespace kiln
