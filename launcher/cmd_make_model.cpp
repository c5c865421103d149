// kiln make-model: writes a random-weight checkpoint (HF directory and GGUF) of a preset shape.
#include <cstdio>
#include <map>

#include "tools/make_model/make_model.h"
#include "launcher/commands.h"

namespace kiln::launcher {

namespace {

struct MakeModelArgs {
  std::string preset = "tiny";
  std::string dtype = "bf16";
  std::string format = "both";
  std::string out;
  uint64_t seed = 1;
  float rms_norm_eps = 0.0f;
  int64_t context = 0;
  int64_t hidden = 0, layers = 0, vocab = 0, experts = 0, experts_per_token = 0;
  std::vector<int64_t> mla_layers;
};

int run_make_model(const MakeModelArgs& a) {
  auto cfg = preset_config(a.preset);
  if (!cfg.ok()) return fail(cfg.status());
  ModelConfig c = *cfg;
  const std::map<std::string, DType> dtypes = {
      {"f32", DType::kF32}, {"f16", DType::kF16}, {"bf16", DType::kBF16}, {"q8_0", DType::kQ8_0},
      {"q4_k_m", DType::kQ4_K}};  // the Q4_K_M mix, see MakeModelOptions::dtype
  MakeModelOptions o;
  o.dtype = dtypes.at(a.dtype);
  o.seed = a.seed;
  o.out_dir = a.out;
  o.write_hf = a.format != "gguf";
  o.write_gguf = a.format != "hf";
  if (a.rms_norm_eps > 0.0f) c.rms_norm_eps = a.rms_norm_eps;
  if (a.context > 0) c.max_context = a.context;
  if (a.hidden > 0) c.hidden_size = a.hidden;
  if (a.vocab > 0) c.vocab_size = a.vocab;
  if (a.experts > 0) c.num_experts = a.experts;
  if (a.experts_per_token > 0) c.experts_per_token = a.experts_per_token;
  if (a.layers > 0 || !a.mla_layers.empty()) {
    if (a.layers > 0) c.num_layers = a.layers;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::kKda);
    for (int64_t l : a.mla_layers) {
      if (l < 0 || l >= c.num_layers) {
        return fail(fmt::format("--mla-layers: layer {} is outside 0..{}", l, c.num_layers - 1));
      }
      c.layer_kinds[static_cast<size_t>(l)] = LayerKind::kMla;
    }
  }
  auto summary = make_model(c, o);
  if (!summary.ok()) return fail(summary.status());
  std::printf("%s\n", summary->c_str());
  return 0;
}

}  // namespace

void register_make_model(CLI::App& app, Runner& run) {
  auto a = std::make_shared<MakeModelArgs>();
  CLI::App* sub = app.add_subcommand("make-model", "Write a random-weight Kimi-Linear checkpoint");
  sub->add_option("--preset", a->preset, "Shape: micro, tiny or mini")
      ->check(CLI::IsMember({"micro", "tiny", "mini"}))->capture_default_str();
  sub->add_option("--dtype", a->dtype, "Weight type: f32, f16, bf16, q8_0 or q4_k_m")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_k_m"}))->capture_default_str();
  sub->add_option("--format", a->format, "Which layouts to write: hf, gguf or both")
      ->check(CLI::IsMember({"hf", "gguf", "both"}))->capture_default_str();
  sub->add_option("--out", a->out, "Output directory (HF files in OUT/hf, GGUF at OUT/model.gguf)")
      ->required();
  sub->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  sub->add_option("--rms-norm-eps", a->rms_norm_eps, "Override rms_norm_eps")
      ->check(CLI::Range(1e-12, 1.0));
  sub->add_option("--context", a->context, "Override the context length")->check(CLI::PositiveNumber);
  sub->add_option("--hidden-size", a->hidden, "Override the hidden size")->check(CLI::PositiveNumber);
  sub->add_option("--layers", a->layers, "Override the number of layers")->check(CLI::Range(1, 4096));
  sub->add_option("--mla-layers", a->mla_layers, "0-based MLA layer indices (others are KDA)")
      ->delimiter(',');
  sub->add_option("--vocab-size", a->vocab, "Override the vocabulary size")->check(CLI::Range(512, 1 << 22));
  sub->add_option("--experts", a->experts, "Override the number of routed experts")->check(CLI::PositiveNumber);
  sub->add_option("--experts-per-token", a->experts_per_token, "Override the routed experts per token")
      ->check(CLI::PositiveNumber);
  sub->callback([&run, a] { run = [a] { return run_make_model(*a); }; });
}

}  // namespace kiln::launcher
