// kiln eval: runs token ids through the model — in one forward (batch) or one token per forward
// (seq) — and writes the logits as raw little-endian float32 [n_tokens][vocab].
#include <cstdio>
#include <fstream>
#include <sstream>

#include "kernels/cpu/sampling.h"
#include "launcher/commands.h"
#include "cluster/rank_model.h"
#include "shard/input_file.h"
#include "shard/memory_budget.h"
#include "kernels/base/checked_math.h"

namespace kiln::launcher {

namespace {

struct EvalArgs {
  std::string model, tokens, tokens_file, dump, mode = "batch";
  int threads = 0, tensor = 0, pipeline = 1;
  bool exact_activations = false;
  std::string backend = "cpu";
  std::vector<int64_t> layer_split;  // from --config
  ConfigFlags config;
};

StatusOr<std::vector<int32_t>> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::string item;
  std::string normalised = text;
  for (char& ch : normalised) {
    if (ch == ',' || ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  }
  std::istringstream in(normalised);
  while (in >> item) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0' || errno != 0 || v < 0 || v > INT32_MAX) {
      return invalid_argument("{}: '{}' is not a token id", what, item);
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("{}: no token ids", what);
  return ids;
}

int run_eval(const EvalArgs& a) {
  std::string text = a.tokens;
  std::string what = "--tokens";
  if (!a.tokens_file.empty()) {
    auto read = read_input_file(a.tokens_file, kMaxTokenListBytes);
    if (!read.ok()) return fail(read.status().with_context("--tokens-file"));
    text = std::move(read).value();
    what = a.tokens_file;
  }
  auto ids = parse_ids(text, what);
  if (!ids.ok()) return fail(ids.status());
  auto ranked = load_rank_model(a.model, a.tensor, a.pipeline, a.layer_split, {}, {},
                                DeviceChoice{backend_device(a.backend), -1});
  if (!ranked.ok()) return fail(ranked.status());
  KimiLinearModel& model = *ranked->model;
  const int64_t vocab = model.config().vocab_size, n = static_cast<int64_t>(ids->size());
  const std::optional<uint64_t> logit_bytes =
      checked_mul(static_cast<uint64_t>(n), static_cast<uint64_t>(vocab) * sizeof(float));
  Status planned = check_host_allocation(
      logit_bytes.value_or(UINT64_MAX),
      fmt::format("{}: the logits of {} tokens x {} vocab", what, n, vocab));
  auto made = planned.ok() ? model.new_state(1, n) : StatusOr<std::unique_ptr<StateCache>>(planned);
  // Under mpirun every rank must hear of a failure, or the others wait in the forward.
  if (ranked->world->world().size > 1) agree_or_abort(*ranked->world, made.status());
  if (!made.ok()) return fail(made.status());
  std::unique_ptr<StateCache> state = std::move(made).value();
  cpu::ThreadPool pool(a.threads);
  pool.set_exact_activations(a.exact_activations);
  std::vector<float> all, logits;
  if (a.mode == "batch") {
    Status s = model.forward(pool, *state, Batch::of({{0, *ids, true}}), all);
    if (!s.ok()) return fail(s);
  } else {
    for (int32_t id : *ids) {
      Status s = model.forward(pool, *state, Batch::of({{0, {id}, false}}), logits);
      if (!s.ok()) return fail(s);
      all.insert(all.end(), logits.begin(), logits.end());
    }
  }
  if (!ranked->is_root()) return 0;  // logits arrive on rank 0
  if (!a.dump.empty()) {
    std::ofstream out(a.dump, std::ios::binary);
    out.write(reinterpret_cast<const char*>(all.data()), static_cast<std::streamsize>(all.size() * 4));
    out.close();
    if (!out) return fail(fmt::format("--dump-logits: cannot write '{}'", a.dump));
  }
  std::printf("tokens %lld, vocab %lld, mode %s\nargmax", static_cast<long long>(n),
              static_cast<long long>(vocab), a.mode.c_str());
  for (int64_t t = 0; t < n; ++t) std::printf(" %d", cpu::argmax(all.data() + t * vocab, vocab));
  std::printf("\n");
  return 0;
}

}  // namespace

void register_eval(CLI::App& app, Runner& run) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand("eval", "Run token ids through the model and dump the logits");
  sub->add_option("--model", a->model, "HF directory or GGUF file (or model.path of --config)");
  auto* tok = sub->add_option("--tokens", a->tokens, "Comma-separated token ids");
  auto* file = sub->add_option("--tokens-file", a->tokens_file, "File of token ids (comma/space separated)");
  tok->excludes(file);
  sub->add_option("--mode", a->mode, "batch: one forward; seq: one token per forward")
      ->check(CLI::IsMember({"batch", "seq"}))->capture_default_str();
  sub->add_option("--dump-logits", a->dump, "Write float32 [n_tokens][vocab] logits here");
  add_layout_options(sub, *a);
  add_config_flags(sub, a->config);
  sub->callback([&run, a, sub, tok, file] {
    run = [a, sub, tok, file] {
      const int code = merge_run_settings(*sub, *a, "eval");
      if (code >= 0) return code;
      if (tok->count() == 0 && file->count() == 0) return fail("eval: give --tokens or --tokens-file");
      return run_eval(*a);
    };
  });
}

}  // namespace kiln::launcher
