// The checkpoint the engine tests share: make-model's micro preset, f32, seed 5, written into
// `dir` (dir/model.gguf, and dir/hf when `write_hf`). Same weights in every test that uses it.
#pragma once

#include <filesystem>

#include "tools/make_model/make_model.h"

namespace kiln::test_util {

inline Status write_micro_model(const std::filesystem::path& dir, bool write_hf) {
  auto config = preset_config("micro");
  if (!config.ok()) return config.status();
  MakeModelOptions o;
  o.seed = 5;
  o.dtype = DType::kF32;
  o.out_dir = dir.string();
  o.write_hf = write_hf;
  auto made = make_model(*config, o);
  return made.ok() ? Status() : made.status();
}

}  // namespace kiln::test_util
