#include "cluster/engine/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <new>

#include "cluster/engine/sampling.h"
#include "cluster/text/chat_template.h"
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

Status generate(KimiLinearModel& model, cpu::ThreadPool& pool, const text::Tokenizer& tokenizer,
                const std::vector<int32_t>& prompt, const GenerationOptions& options,
                const std::function<void(std::string_view)>& on_text, GenerationStats* stats,
                Communicator* control) {
  using Clock = std::chrono::steady_clock;
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  const int64_t vocab = model.config().vocab_size;
  if (const int64_t at = first_id_outside(prompt, vocab); at >= 0) {
    const int32_t id = prompt[static_cast<size_t>(at)];
    return invalid_argument("token {} of the prompt is '{}' (id {}), which this model cannot embed "
                            "(vocab_size {})", at, tokenizer.token_bytes(id), id, vocab);
  }
  const int64_t context = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  if (context > model.config().max_context) {
    return invalid_argument("prompt ({} tokens) + max tokens ({}) exceeds the model context ({})",
                            prompt.size(), options.max_tokens, model.config().max_context);
  }
  const bool root = control == nullptr || control->rank() == 0;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<StateCache> state, model.new_state(1, context));
  serve::SamplingOptions sampling;
  sampling.temperature = options.sampling.temperature;
  sampling.top_k = options.sampling.top_k;
  sampling.top_p = options.sampling.top_p;
  sampling.min_p = options.sampling.min_p;
  serve::SequenceSampler sampler(sampling, options.seed, vocab);
  text::StreamDecoder decoder(tokenizer);
  const std::vector<int32_t> eos = tokenizer.eos_ids();
  std::vector<float> logits;
  GenerationStats st;
  st.prompt_tokens = static_cast<int64_t>(prompt.size());
  st.finish_reason = "length";

  auto t0 = Clock::now();
  KILN_RETURN_IF_ERROR(model.forward(pool, *state, Batch::of({{0, prompt, false}}), logits));
  auto t1 = Clock::now();
  st.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  constexpr int32_t kStop = -1, kNonFinite = -2;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    int32_t token = kStop;
    if (root) {
      if (!std::all_of(logits.begin(), logits.begin() + vocab,
                       [](float x) { return std::isfinite(x); })) {
        token = kNonFinite;
      } else {
        token = sampler.sample(logits.data(), {}, {});
      }
      if (options.stop_at_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
        st.finish_reason = "stop";
        token = kStop;
      }
    }
    if (control != nullptr) control->broadcast(&token, sizeof(token), 0);
    if (token == kNonFinite) {
      return internal_error("the model produced non-finite logits (NaN or infinity) after {} "
                            "prompt and {} generated tokens", prompt.size(), i);
    }
    if (token < 0) break;
    ++st.generated_tokens;
    if (root) on_text(decoder.push(token));
    if (i + 1 == options.max_tokens) break;
    KILN_RETURN_IF_ERROR(model.forward(pool, *state, Batch::of({{0, {token}, false}}), logits));
  }
  if (root) on_text(decoder.flush());
  st.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  if (stats != nullptr) *stats = st;
  return {};
}

}  // namespace kiln
