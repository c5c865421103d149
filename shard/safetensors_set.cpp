// SafetensorsSet: every tensor of an HF model directory, from `model.safetensors` or from the
// shards named by `model.safetensors.index.json`. The index is checked against the shards: every
// shard it names must open, every tensor must sit in the shard it names, no tensor twice.
#include <filesystem>
#include <set>

#include <boost/json.hpp>

#include "shard/input_file.h"
#include "shard/json_strict.h"
#include "shard/safetensors.h"

namespace kiln {
namespace {

namespace bj = boost::json;

constexpr uint64_t kMaxIndexBytes = kMaxIndexFileBytes;

// Whether anything is at `path`, a dangling symlink included; opening it then says whether it
// is a regular file, so a FIFO, directory or broken link named like the index is an error, not
// skipped.
bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::symlink_status(path, ec));
}

// weight_map of the index at `path`: tensor name -> shard file name (a plain file name).
StatusOr<std::map<std::string, std::string>> read_weight_map(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> f, MappedFile::open(path));
  if (f->size() > kMaxIndexBytes) {
    return invalid_argument("{}: index is {} bytes, over the {} byte limit", path, f->size(),
                            kMaxIndexBytes);
  }
  const std::string_view text(reinterpret_cast<const char*>(f->data()), f->size());
  auto v = parse_json_strict(text, "index");
  if (!v.ok()) return v.status().with_context(path);
  const bj::object* root = v->if_object();
  const bj::value* wm = root != nullptr ? root->if_contains("weight_map") : nullptr;
  if (wm == nullptr || !wm->is_object()) {
    return invalid_argument("{}: no \"weight_map\" object", path);
  }
  std::map<std::string, std::string> out;
  for (const auto& kv : wm->get_object()) {
    const std::string tensor(kv.key());
    if (!kv.value().is_string()) {
      return invalid_argument("{}: weight_map entry '{}' is not a string", path, tensor);
    }
    std::string shard(kv.value().get_string());
    if (shard.empty() || shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos || shard.find("..") != std::string::npos) {
      return invalid_argument("{}: weight_map entry '{}' names shard '{}', which is not a plain "
                              "file name in the model directory", path, tensor, shard);
    }
    out.emplace(tensor, std::move(shard));
  }
  return out;
}

}  // namespace

StatusOr<SafetensorsSet> SafetensorsSet::open_dir(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  SafetensorsSet set;
  std::map<std::string, std::string> weight_map;
  std::map<std::string, const SafetensorsFile*> shard_by_name;
  std::vector<std::string> shard_names;
  if (exists(index_path)) {
    KILN_ASSIGN_OR_RETURN(weight_map, read_weight_map(index_path));
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : weight_map) {
      if (seen.insert(shard).second) shard_names.push_back(shard);
    }
  } else if (exists(single_path)) {
    shard_names.push_back("model.safetensors");
  } else {
    return not_found("{}: neither model.safetensors.index.json nor model.safetensors found", dir);
  }
  for (const std::string& name : shard_names) {
    auto f = SafetensorsFile::open(dir + "/" + name);
    if (!f.ok()) {
      return weight_map.empty()
                 ? f.status()
                 : f.status().with_context(fmt::format("{}: shard '{}'", index_path, name));
    }
    set.files_.push_back(std::make_shared<SafetensorsFile>(std::move(f).value()));
    shard_by_name[name] = set.files_.back().get();
  }
  for (const auto& file : set.files_) {
    for (const SafetensorsTensor& t : file->tensors()) {
      auto [it, fresh] = set.by_name_.emplace(t.name, &t);
      if (!fresh) {
        return invalid_argument("{}: tensor '{}' appears in both {} and {}", dir, t.name,
                                it->second->file, t.file);
      }
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    if (shard_by_name[shard]->find(tensor) != nullptr) continue;
    const SafetensorsTensor* found = set.find(tensor);
    return invalid_argument("{}: weight_map puts tensor '{}' in shard '{}', which does not hold "
                            "it ({})", index_path, tensor, shard,
                            found != nullptr ? "it is in " + found->file : "no shard holds it");
  }
  return set;
}

const SafetensorsTensor* SafetensorsSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(name);
  return out;
}

}  // namespace kiln
