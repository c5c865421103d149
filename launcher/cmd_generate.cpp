// kiln generate: tokenizes a prompt (optionally in the chat format), generates, streams text.
#include <cstdio>

#include "cluster/engine/generation.h"
#include "cluster/topology/rank_model.h"
#include "text/chat_template.h"
#include "launcher/commands.h"

namespace kiln::launcher {

namespace {

struct GenerateArgs {
  std::string model, prompt, system;
  bool chat = false;
  int64_t max_tokens = 64;
  float temperature = 0.8f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  int threads = 0, tensor = 0, pipeline = 1;
  bool exact_activations = false;
  std::string backend = "cpu";
  std::vector<int64_t> layer_split;  // from --config
  ConfigFlags config;
};

int run_generate(const GenerateArgs& a) {
  auto ranked = load_rank_model(a.model, a.tensor, a.pipeline, a.layer_split, {}, {},
                                DeviceChoice{backend_device(a.backend), -1});
  if (!ranked.ok()) return fail(ranked.status());
  KimiLinearModel& model = *ranked->model;
  const bool root = ranked->is_root();
  auto tokenizer = load_tokenizer(model.checkpoint());
  if (!tokenizer.ok()) return fail(tokenizer.status());
  std::string text = a.prompt;
  if (a.chat) {
    auto rendered = render_chat_prompt(model.checkpoint(), a.system, a.prompt);
    if (!rendered.ok()) return fail(rendered.status());
    text = *rendered;
  }
  const std::vector<int32_t> ids = tokenizer->encode(text, a.chat);
  GenerationOptions o;
  o.max_tokens = a.max_tokens;
  o.sampling = {a.temperature, a.top_k, a.top_p, a.min_p};
  o.seed = a.seed;
  cpu::ThreadPool pool(a.threads);
  pool.set_exact_activations(a.exact_activations);
  GenerationStats st;
  Communicator* control = ranked->world->world().size > 1 ? &ranked->world->world_comm() : nullptr;
  Status s = generate(model, pool, *tokenizer, ids, o,
                      [](std::string_view piece) {
                        std::fwrite(piece.data(), 1, piece.size(), stdout);
                        std::fflush(stdout);
                      },
                      &st, control);
  if (!s.ok()) return fail(s);
  if (!root) return 0;
  std::printf("\n");
  std::fprintf(stderr, "[prompt %lld tokens, %.1f tok/s; generated %lld tokens, %.1f tok/s; finish: %s]\n",
               static_cast<long long>(st.prompt_tokens), st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
               static_cast<long long>(st.generated_tokens),
               st.generated_tokens / std::max(st.decode_seconds, 1e-9), st.finish_reason.c_str());
  return 0;
}

}  // namespace

void register_generate(CLI::App& app, Runner& run) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "Generate text from a prompt");
  sub->add_option("--model", a->model, "HF directory or GGUF file (or model.path of --config)");
  auto* prompt = sub->add_option("--prompt", a->prompt, "Prompt text");
  sub->add_flag("--chat", a->chat, "Wrap the prompt as a user turn of the Kimi chat format");
  sub->add_option("--system", a->system, "System prompt for --chat (default: the checkpoint's)");
  sub->add_option("--max-tokens", a->max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--temperature", a->temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  sub->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0 = off)")->check(CLI::Range(0, 1 << 24));
  sub->add_option("--top-p", a->top_p, "Nucleus sampling mass (1 = off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--min-p", a->min_p, "Drop tokens below min_p x the top probability")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  add_layout_options(sub, *a);
  add_config_flags(sub, a->config);
  sub->callback([&run, a, sub, prompt] {
    run = [a, sub, prompt] {
      const int code = merge_run_settings(*sub, *a, "generate");
      if (code >= 0) return code;
      if (prompt->count() == 0) return fail("generate: --prompt is required");
      return run_generate(*a);
    };
  });
}

}  // namespace kiln::launcher
