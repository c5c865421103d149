// kiln inspect: the config, the model's and the tokenizer's vocabulary sizes, tensors, dtypes,
// bytes and per-sequence state sizes of a checkpoint.
#include <cstdio>
#include <map>

#include "cluster/engine/generation.h"
#include "launcher/commands.h"
#include "shard/model.h"

namespace kiln::launcher {

namespace {

struct InspectArgs {
  std::string model;
  bool tensors = false;
  int tensor = 1, pipeline = 1;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
  return fmt::format("{:.2f} {}", b, units[u]);
}

int run_inspect(const InspectArgs& a) {
  auto model = KimiLinearModel::load(a.model);
  if (!model.ok()) return fail(model.status());
  const Checkpoint& ck = (*model)->checkpoint();
  const ModelConfig& c = ck.config();
  VocabFit fit;
  auto tokenizer = load_tokenizer(ck, &fit);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  std::printf("%s\n%s\n%s\n\n", ck.path().c_str(), c.describe().c_str(), fit.describe().c_str());
  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;
  int64_t params = 0;
  for (const TensorRef& t : ck.tensors()) {
    auto& e = by_dtype[std::string(dtype_name(t.dtype))];
    e.first += 1;
    e.second += t.nbytes;
    params += t.numel();
  }
  std::printf("tensors: %zu, parameters: %lld, bytes: %s\n", ck.tensors().size(),
              static_cast<long long>(params), human_bytes(static_cast<double>(ck.total_bytes())).c_str());
  for (const auto& [name, e] : by_dtype) {
    std::printf("  %-5s %5lld tensors %s\n", name.c_str(), static_cast<long long>(e.first),
                human_bytes(static_cast<double>(e.second)).c_str());
  }
  const StateSizes s = StateSizes::from_config(c);
  std::printf("per-sequence state: KDA %s per sequence (%lld layers: conv %lld + recurrent %lld "
              "floats each), MLA %s per token (%lld layers x %lld floats)\n",
              human_bytes(static_cast<double>(s.kda_bytes_per_slot())).c_str(),
              static_cast<long long>(s.n_kda_layers), static_cast<long long>(s.conv_floats),
              static_cast<long long>(s.recurrent_floats),
              human_bytes(static_cast<double>(s.mla_bytes_per_token())).c_str(),
              static_cast<long long>(s.n_mla_layers), static_cast<long long>(s.latent_floats));
  std::printf("weights read per decoded token (excl. embedding): %s\n",
              human_bytes(static_cast<double>((*model)->weights().active_bytes_per_token(c))).c_str());
  if (a.tensor > 1 || a.pipeline > 1) {
    const DType dtype = (*model)->weights().layers.empty()
                            ? DType::kBF16
                            : (*model)->weights().lm_head.dtype;
    auto plans = plan_all(c, {a.tensor, a.pipeline, {}}, dtype, {});
    if (!plans.ok()) return fail(plans.status());
    std::printf("\nper-rank shares for tensor=%d x pipeline=%d (matrices as %s):\n", a.tensor,
                a.pipeline, std::string(dtype_name(dtype)).c_str());
    for (const RankPlan& p : *plans) {
      std::printf("%s\n", describe_plan(c, p, estimate_rank_memory(c, p, dtype)).c_str());
    }
  }
  if (a.tensors) {
    for (const TensorRef& t : ck.tensors()) {
      std::printf("  %-60s %-5s %-22s %llu\n", t.name.c_str(), std::string(dtype_name(t.dtype)).c_str(),
                  shape_string(t.shape).c_str(), static_cast<unsigned long long>(t.nbytes));
    }
  }
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, Runner& run) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* sub = app.add_subcommand("inspect", "Show a checkpoint's config, tensors and state sizes");
  sub->add_option("--model", a->model, "HF directory or GGUF file")->required();
  sub->add_flag("--tensors", a->tensors, "List every tensor");
  sub->add_option("--tensor", a->tensor, "Show each rank's share for this tensor-parallel size")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--pipeline", a->pipeline, "... and this number of pipeline stages")
      ->check(CLI::Range(1, 4096));
  sub->callback([&run, a] { run = [a] { return run_inspect(*a); }; });
}

}  // namespace kiln::launcher
