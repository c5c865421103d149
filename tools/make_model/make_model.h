// Random-weight Kimi-Linear checkpoints for tests, demos and benchmarks: one set of weights
// written both as an HF directory (config.json with Hub keys, model.safetensors with Hub tensor
// names, tiktoken.model, tokenizer_config.json) and as a GGUF laid out as llama.cpp's converter
// writes it. Weights are a pure function of (shape, seed, tensor name), so both files hold the
// same numbers: every value is first rounded through the GGUF dtype in the GGUF layout.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/config.h"

namespace kiln {

// "micro", "tiny" or "mini"; InvalidArgument naming the preset otherwise.
StatusOr<ModelConfig> preset_config(const std::string& preset);

struct MakeModelOptions {
  uint64_t seed = 1;
  // GGUF matrices; the HF twin uses it too except block types → f32. kQ4_K means llama.cpp's
  // Q4_K_M mix of q4_k, q6_k and q8_0 (see gguf_type in make_model.cpp).
  DType dtype = DType::kBF16;
  std::string out_dir;          // HF files go to out_dir/hf, the GGUF to out_dir/model.gguf
  bool write_hf = true;
  bool write_gguf = true;
};

// Writes the checkpoint(s); config must validate. Returns a one-line summary.
StatusOr<std::string> make_model(const ModelConfig& config, const MakeModelOptions& options);

}  // namespace kiln
