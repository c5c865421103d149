#include "cluster/engine/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <new>

#include "text/chat_template.h"
#include "cluster/engine/engine.h"
#include "cluster/engine/worker.h"
#include "shard/input_file.h"

#include <filesystem>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

namespace kiln {

StatusOr<text::Tokenizer> load_tokenizer(const Checkpoint& checkpoint, VocabFit* fit_out) try {
  auto tokenizer = checkpoint.gguf() != nullptr ? text::Tokenizer::from_gguf(*checkpoint.gguf())
                                                : text::Tokenizer::from_hf_dir(checkpoint.path());
  if (!tokenizer.ok()) return tokenizer.status();
  auto fit = check_vocab_fit(*tokenizer, checkpoint.config().vocab_size);
  if (!fit.ok()) return fit.status().with_context(checkpoint.path());
  if (fit_out != nullptr) {
    *fit_out = *fit;
  } else if (fit->ids_above > 0) {
    spdlog::warn("{}", fit->describe());
  }
  return tokenizer;
} catch (const std::bad_alloc&) {
  return Status(StatusCode::kResourceExhausted,
                fmt::format("{}: out of memory while reading the tokenizer", checkpoint.path()));
}

namespace {

// The checkpoint's chat template text, if it has one. A template file that exists but cannot be
// read (not a regular file, over its size cap) is an error naming it.
StatusOr<std::optional<std::string>> chat_template_text(const Checkpoint& ck) {
  if (ck.gguf() != nullptr) {
    auto t = ck.gguf()->get_string("tokenizer.chat_template");
    if (t.ok()) return std::optional<std::string>(*t);
    return std::optional<std::string>();
  }
  const std::filesystem::path dir(ck.path());
  for (const char* name : {"chat_template.jinja", "tokenizer_config.json"}) {
    const bool jinja = std::string(name) == "chat_template.jinja";
    auto text = read_input_file((dir / name).string(),
                                jinja ? kMaxTemplateFileBytes : kMaxJsonFileBytes);
    if (!text.ok() && text.status().code() == StatusCode::kNotFound) continue;
    if (!text.ok()) return text.status();
    if (jinja) return std::optional<std::string>(std::move(*text));
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(*text, ec);
    if (ec || !v.is_object()) continue;
    const auto* t = v.as_object().if_contains("chat_template");
    if (t != nullptr && t->is_string()) return std::optional<std::string>(std::string(t->as_string()));
  }
  return std::optional<std::string>();
}

}  // namespace

StatusOr<text::ChatOptions> chat_options(const Checkpoint& checkpoint) {
  text::ChatOptions options;
  KILN_ASSIGN_OR_RETURN(const std::optional<std::string> tmpl, chat_template_text(checkpoint));
  if (tmpl) {
    if (auto d = text::default_system_from_template(*tmpl)) options.default_system = *d;
  }
  return options;
}

StatusOr<std::string> render_chat_prompt(const Checkpoint& checkpoint, const std::string& system,
                                         const std::string& user) {
  KILN_ASSIGN_OR_RETURN(text::ChatOptions options, chat_options(checkpoint));
  std::vector<text::ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system, {}, {}, {}});
  messages.push_back({"user", user, {}, {}, {}});
  return text::render_chat(messages, options);
}

Status check_prompt(const std::vector<int32_t>& prompt, int64_t max_tokens,
                    const ModelConfig& config, const text::Tokenizer& tokenizer) {
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  if (const int64_t at = first_id_outside(prompt, config.vocab_size); at >= 0) {
    const int32_t id = prompt[static_cast<size_t>(at)];
    return invalid_argument("token {} of the prompt is '{}' (id {}), which this model cannot embed "
                            "(vocab_size {})",
                            at, tokenizer.token_bytes(id), id, config.vocab_size);
  }
  const int64_t context = static_cast<int64_t>(prompt.size()) + max_tokens;
  if (context > config.max_context) {
    return invalid_argument("prompt ({} tokens) + max tokens ({}) exceeds the model context ({})",
                            prompt.size(), max_tokens, config.max_context);
  }
  return {};
}

namespace {

constexpr int64_t kPageTokens = 64;  // StateCache::with_fixed_pages' default, as generate had
// The other ranks of a CLI job wait on rank 0 through a whole prompt's prefill in one step.
constexpr double kCliSilenceLimitS = 3600;

// The engine options for one request of `prompt` + max_tokens: one slot, its pages, the whole
// prompt in one step (one forward, as a single-sequence prefill).
serve::Engine::Options one_request_options(int64_t prompt, int64_t max_tokens) {
  serve::Engine::Options o;
  o.scheduler.max_batch_tokens = std::max<int64_t>(prompt, 1);
  o.scheduler.prefill_chunk = o.scheduler.max_batch_tokens;
  o.scheduler.max_sequences = 1;
  o.scheduler.max_queue = 1;
  o.scheduler.page_tokens = kPageTokens;
  o.scheduler.max_context = prompt + max_tokens;
  o.scheduler.n_pages = (o.scheduler.max_context + kPageTokens - 1) / kPageTokens;
  o.step_timeout_s = kCliSilenceLimitS;
  return o;
}

}  // namespace

Status run_one_request(KimiLinearModel& model, cpu::ThreadPool& pool,
                       const text::Tokenizer& tokenizer, Communicator* control,
                       std::shared_ptr<serve::EngineRequest> request,
                       const std::function<void(serve::Event&)>& on_event) {
  const serve::Engine::Options o = one_request_options(
      static_cast<int64_t>(request->prompt.size()), request->params.max_tokens);
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<StateCache> state,
                        model.new_paged_state(1, o.scheduler.n_pages, kPageTokens));
  KILN_RETURN_IF_ERROR(model.reserve(o.scheduler.max_batch_tokens));
  if (control != nullptr && control->rank() != 0) {
    serve::WorkerOptions w;
    w.silence_timeout_s = w.first_message_timeout_s = kCliSilenceLimitS;
    return serve::run_worker(model, pool, *state, *control, w);
  }
  serve::Engine engine(model, pool, *state, control, tokenizer, o, nullptr);
  if (!request->stream) request->stream = std::make_shared<serve::RequestStream>();
  auto stream = request->stream;
  KILN_RETURN_IF_ERROR(engine.submit(std::move(request)));
  auto consume = [&] {
    for (serve::Event& e : stream->take()) on_event(e);
  };
  Status s = engine.run_until_idle(consume);
  consume();
  return s;
}

Status generate(KimiLinearModel& model, cpu::ThreadPool& pool, const text::Tokenizer& tokenizer,
                const std::vector<int32_t>& prompt, const GenerationOptions& options,
                const std::function<void(std::string_view)>& on_text, GenerationStats* stats,
                Communicator* control) {
  using Clock = std::chrono::steady_clock;
  KILN_RETURN_IF_ERROR(check_prompt(prompt, options.max_tokens, model.config(), tokenizer));
  auto request = std::make_shared<serve::EngineRequest>();
  request->id = "generate";
  request->prompt = prompt;
  serve::GenerateParams& g = request->params;
  g.max_tokens = options.max_tokens;
  g.ignore_eos = !options.stop_at_eos;
  g.skip_special_tokens = false;
  g.sampling.temperature = options.sampling.temperature;
  g.sampling.top_k = options.sampling.top_k;
  g.sampling.top_p = options.sampling.top_p;
  g.sampling.min_p = options.sampling.min_p;
  g.sampling.seed = options.seed;

  GenerationStats st;
  st.prompt_tokens = static_cast<int64_t>(prompt.size());
  st.finish_reason = "length";
  Status failed;
  const auto t0 = Clock::now();
  std::optional<Clock::time_point> first;  // the first token's arrival ends the prefill
  Status s = run_one_request(model, pool, tokenizer, control, request, [&](serve::Event& e) {
    if (e.kind == serve::Event::Kind::kError) {
      failed = internal_error("{}", e.message);
    } else if (e.kind == serve::Event::Kind::kDelta) {
      if (!first) first = Clock::now();
      st.generated_tokens += static_cast<int64_t>(e.tokens.size());
      on_text(e.text);
      if (e.finish_reason) st.finish_reason = *e.finish_reason;
      // An end-of-generation token ends the output and is not part of it.
      if (st.finish_reason == "stop") st.generated_tokens -= 1;
    }
  });
  KILN_RETURN_IF_ERROR(s);
  KILN_RETURN_IF_ERROR(failed);
  const auto t1 = first.value_or(Clock::now());
  st.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  st.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  if (stats != nullptr) *stats = st;
  return {};
}

}  // namespace kiln
