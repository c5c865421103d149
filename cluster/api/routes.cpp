#include "cluster/api/routes.h"

#include <chrono>
#include <cctype>
#include <cmath>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include <boost/json.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "text/vocab_fit.h"
#include "shard/input_file.h"

namespace kiln::serve {
namespace {

namespace json = boost::json;
using gateway::HttpRequest;
using gateway::HttpResponse;
using gateway::RouteResult;

std::string random_hex(int n) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(static_cast<size_t>(n), '0');
  for (char& c : s) c = kHex[rng() & 15];
  return s;
}

void count_request(const ServerState& st, int status) {
  if (st.metrics != nullptr) {
    st.metrics->add("requests_total", 1, Metrics::label("status", std::to_string(status)));
  }
}

RouteResult json_response(int status, std::string body) {
  RouteResult r;
  r.response.status = status;
  r.response.body = std::move(body);
  return r;
}

RouteResult error_response(const ServerState& st, const ApiError& e) {
  count_request(st, e.status);
  RouteResult r = json_response(e.status, error_body(e));
  if (e.status == 429) r.response.headers.emplace_back("Retry-After", "1");
  if (e.status == 503) r.response.headers.emplace_back("Retry-After", "5");
  return r;
}

ApiError from_status(const Status& s) {
  switch (s.code()) {
    case StatusCode::kResourceExhausted: return rate_limited(s.message());
    case StatusCode::kUnavailable: return unavailable(s.message());
    case StatusCode::kInvalidArgument: return bad_request(s.message());
    default: {
      ApiError e;
      e.status = 500;
      e.type = "server_error";
      e.message = "internal error";
      return e;
    }
  }
}

// The client-facing error for an engine kError event.
ApiError engine_error(const Event& e) {
  switch (e.status) {
    case 503: return unavailable(e.message);
    case 429: return rate_limited(e.message);
    case 400: return bad_request(e.message);
    default: {
      ApiError err;
      err.status = 500;
      err.type = "server_error";
      err.message = e.message;
      return err;
    }
  }
}

// The engine's events for one request, turned into SSE frames (streams) or one body.
class GenerationSource final : public gateway::ResponseSource {
 public:
  GenerationSource(const ServerState& st, std::shared_ptr<RequestStream> stream, ResponseMeta meta,
                   bool chat, bool include_usage, bool with_logprobs, int n)
      : st_(st),
        stream_(std::move(stream)),
        meta_(std::move(meta)),
        chat_(chat),
        include_usage_(include_usage),
        with_logprobs_(with_logprobs),
        choices_(static_cast<size_t>(n)),
        first_(static_cast<size_t>(n), true) {
    for (int i = 0; i < n; ++i) choices_[static_cast<size_t>(i)].index = i;
  }
  ~GenerationSource() override {
    if (!finished_) {
      stream_->cancel();
      count_request(st_, 499);  // the client closed the connection first
    }
  }

  void set_wakeup(std::function<void()> wake) override { stream_->set_wakeup(std::move(wake)); }

  std::string take(bool* done) override {
    std::string out;
    for (Event& e : stream_->take()) {
      if (finished_) break;
      switch (e.kind) {
        case Event::Kind::kDelta: {
          const auto i = static_cast<size_t>(e.index);
          std::string chunk = chat_ ? chat_chunk(meta_, e, first_[i], with_logprobs_, *st_.tokenizer.load())
                                    : completion_chunk(meta_, e, with_logprobs_, *st_.tokenizer.load());
          first_[i] = false;
          out += "data: " + chunk + "\n\n";
          break;
        }
        case Event::Kind::kDone:
          if (include_usage_) out += "data: " + usage_chunk(meta_, chat_, e.usage) + "\n\n";
          out += "data: [DONE]\n\n";
          finish(200);
          break;
        case Event::Kind::kError: {
          const ApiError err = engine_error(e);
          out += "data: " + error_body(err) + "\n\n";
          out += "data: [DONE]\n\n";
          finish(e.status);
          break;
        }
      }
    }
    *done = finished_;
    return out;
  }

  std::optional<HttpResponse> take_response() override {
    for (Event& e : stream_->take()) {
      if (finished_) break;
      switch (e.kind) {
        case Event::Kind::kDelta: {
          ChoiceOutput& c = choices_[static_cast<size_t>(e.index)];
          if (e.is_echo) {
            c.echo_text = std::move(e.text);
            c.echo_logprobs = std::move(e.logprobs);
            break;
          }
          c.text += e.text;
          c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
          c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
          if (e.finish_reason) c.finish_reason = *e.finish_reason;
          break;
        }
        case Event::Kind::kDone: {
          HttpResponse r;
          r.body = chat_ ? chat_body(meta_, choices_, e.usage, with_logprobs_, *st_.tokenizer.load())
                         : completion_body(meta_, choices_, e.usage, with_logprobs_, *st_.tokenizer.load());
          finish(200);
          return r;
        }
        case Event::Kind::kError: {
          const ApiError err = engine_error(e);
          HttpResponse r;
          r.status = err.status;
          r.body = error_body(err);
          if (err.status == 429) r.headers.emplace_back("Retry-After", "1");
          if (err.status == 503) r.headers.emplace_back("Retry-After", "5");
          finish(err.status);
          return r;
        }
      }
    }
    return std::nullopt;
  }

  void cancel() override {
    stream_->cancel();
    if (Engine* e = st_.engine.load()) e->wake();
  }

 private:
  void finish(int status) {
    finished_ = true;
    count_request(st_, status);
  }

  const ServerState& st_;
  std::shared_ptr<RequestStream> stream_;
  ResponseMeta meta_;
  bool chat_, include_usage_, with_logprobs_;
  std::vector<ChoiceOutput> choices_;
  std::vector<bool> first_;
  bool finished_ = false;
};

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Text can tokenize to ids the model has no rows for (a tokenizer with reserved ids above
// vocab_size): 400 on `param`, naming the token.
std::optional<ApiError> check_prompt_ids(const ServerState& st, const std::vector<int32_t>& ids,
                                         const char* param) {
  if (st.limits.vocab_size <= 0) return std::nullopt;
  const int64_t at = first_id_outside(ids, st.limits.vocab_size);
  if (at < 0) return std::nullopt;
  const int32_t id = ids[static_cast<size_t>(at)];
  return bad_request(fmt::format("token {} of the prompt is {} (id {}), which this model cannot "
                                 "embed (vocab_size {})",
                                 at, to_valid_utf8(st.tokenizer.load()->token_bytes(id)), id,
                                 st.limits.vocab_size),
                     param);
}

RouteResult generate(ServerState& st, Endpoint endpoint, const HttpRequest& req) {
  auto parsed_or = parse_request(endpoint, req.body, st.limits);
  if (auto* e = std::get_if<ApiError>(&parsed_or)) return error_response(st, *e);
  ParsedRequest& p = std::get<ParsedRequest>(parsed_or);
  const bool chat = endpoint == Endpoint::kChat;
  std::vector<int32_t> prompt;
  if (chat) {
    text::ChatOptions options = st.chat;
    options.tools_json = p.tools_json;
    prompt = st.tokenizer.load()->encode(text::render_chat(p.messages, options), true);
  } else if (p.prompt_text) {
    prompt = st.tokenizer.load()->encode(*p.prompt_text, true);
  } else {
    prompt = p.prompt_ids;
  }
  if (prompt.empty()) return error_response(st, bad_request("the prompt has no tokens", "prompt"));
  if (auto e = check_prompt_ids(st, prompt, chat ? "messages" : "prompt")) {
    return error_response(st, *e);
  }
  auto max_tokens = resolve_max_tokens(p, static_cast<int64_t>(prompt.size()), st.limits);
  if (auto* e = std::get_if<ApiError>(&max_tokens)) return error_response(st, *e);

  auto request = std::make_shared<EngineRequest>();
  request->id = (chat ? "chatcmpl-" : "cmpl-") + random_hex(24);
  request->prompt = std::move(prompt);
  request->params = p.params;
  request->params.max_tokens = std::get<int64_t>(max_tokens);
  request->stream = std::make_shared<RequestStream>();
  if (Status s = st.engine.load()->submit(request); !s.ok()) {
    spdlog::debug("{}: not admitted: {}", request->id, s.message());
    return error_response(st, from_status(s));
  }
  spdlog::debug("{}: {} prompt tokens, max_tokens {}, n {}", request->id, request->prompt.size(),
                request->params.max_tokens, request->params.n);
  ResponseMeta meta{request->id, unix_now(), st.model_id};
  RouteResult r;
  r.stream = p.stream;
  if (p.stream) {
    r.response.content_type = "text/event-stream";
  }
  r.source = std::make_shared<GenerationSource>(st, request->stream, meta, chat, p.include_usage,
                                                p.params.logprobs >= 0, p.params.n);
  return r;
}

const char* engine_state(const ServerState& st, int* status) {
  *status = 503;
  if (st.failed.load()) return "failed";
  Engine* engine = st.engine.load();
  if (engine == nullptr) return "loading";
  const EngineHealth h = engine->health();
  if (h.failed) return "failed";
  if (!h.running) return "loading";
  if (h.draining) return "draining";
  if (h.stalled) return "stalled";
  *status = 200;
  return "ok";
}

RouteResult health(const ServerState& st, bool detailed) {
  int status = 503;
  const char* state = engine_state(st, &status);
  json::object o;
  o["status"] = state;
  if (detailed) {
    json::array ranks;
    {
      std::lock_guard lock(st.load_mu);
      for (const RankLoad& r : st.ranks) {
        ranks.push_back(json::object{{"rank", r.rank},
                                     {"state", r.ready ? "ready" : "loading"},
                                     {"loaded_bytes", r.loaded_bytes},
                                     {"total_bytes", r.total_bytes}});
      }
      if (!st.failure.empty()) o["error"] = st.failure;
    }
    o["ranks"] = std::move(ranks);
    if (Engine* engine = st.engine.load()) {
      const SchedulerStats s = engine->stats();
      o["running"] = s.running_requests;
      o["waiting"] = s.waiting_requests;
      const EngineHealth h = engine->health();
      o["seconds_since_step"] = std::round(h.seconds_since_step * 1000) / 1000;
    }
  }
  RouteResult r = json_response(status, json::serialize(o));
  if (status == 503 && std::string_view(state) != "failed") {
    r.response.headers.emplace_back("Retry-After", "5");
  }
  return r;
}

RouteResult metrics_route(const ServerState& st) {
  RouteResult r;
  r.response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (st.metrics != nullptr) {
    if (Engine* engine = st.engine.load()) {
      const EngineHealth h = engine->health();
      const bool up = h.running && !h.failed && !h.stalled;
      for (int rank = 0; rank < st.world_size; ++rank) {
        st.metrics->set("rank_up", up ? 1 : 0, Metrics::label("rank", std::to_string(rank)));
      }
    }
    r.response.body = st.metrics->render();
  }
  return r;
}

RouteResult tokenize(ServerState& st, const HttpRequest& req) {
  auto parsed = parse_tokenize(req.body, st.limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return error_response(st, *e);
  const TokenizeRequest& t = std::get<TokenizeRequest>(parsed);
  std::vector<int32_t> ids;
  if (t.prompt) {
    ids = st.tokenizer.load()->encode(*t.prompt, true);
  } else {
    ids = st.tokenizer.load()->encode(text::render_chat(t.messages, st.chat), true);
  }
  if (auto e = check_prompt_ids(st, ids, t.prompt ? "prompt" : "messages")) {
    return error_response(st, *e);
  }
  count_request(st, 200);
  return json_response(200, tokenize_body(ids, st.limits.context));
}

RouteResult detokenize(ServerState& st, const HttpRequest& req) {
  auto parsed = parse_detokenize(req.body, st.limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return error_response(st, *e);
  count_request(st, 200);
  return json_response(200, detokenize_body(st.tokenizer.load()->decode(std::get<std::vector<int32_t>>(parsed))));
}

}  // namespace

void define_route_metrics(Metrics& metrics) {
  metrics.define("requests_total", Metrics::Type::kCounter,
                 "Requests answered, by HTTP status (499: the client left first).");
  metrics.define("rank_up", Metrics::Type::kGauge, "1 while the rank is loaded and stepping.");
}

gateway::Handler make_routes(ServerState& st) {
  return [&st](const HttpRequest& req) -> RouteResult {
    const std::string& path = req.path;
    const bool is_health = path == "/health" || path.rfind("/health/", 0) == 0;
    if (!st.api_keys.empty() && !is_health && (path != "/metrics" || st.metrics_require_key) &&
        !authorized(req.authorization, st.api_keys)) {
      RouteResult r = error_response(st, unauthorized());
      r.response.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
    const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
    if (get && path == "/health/live") return json_response(200, R"({"status":"ok"})");
    if (get && path == "/health") return health(st, false);
    if (get && path == "/health/ready") return health(st, true);
    if (get && path == "/metrics") return metrics_route(st);
    if (Engine* engine = st.engine.load(); engine != nullptr && engine->health().draining) {
      return error_response(st, unavailable("the server is draining (shutting down)"));
    }
    // Past this point the server state is read: it is complete once the engine is published
    // (the store of `engine` happens after every field is set).
    const bool loaded = st.engine.load() != nullptr && st.tokenizer.load() != nullptr;
    if (get && path == "/v1/models") {
      if (!loaded) return error_response(st, unavailable("the model is still loading"));
      return json_response(200, models_body(st.model_id, st.created, st.limits.context));
    }
    const bool known = path == "/v1/completions" || path == "/v1/chat/completions" ||
                       path == "/tokenize" || path == "/detokenize";
    if (known && !post) {
      ApiError e = bad_request(fmt::format("{} takes POST, not {}", path, req.method));
      e.status = 405;
      return error_response(st, e);
    }
    if (!known) return error_response(st, not_found(fmt::format("no route {} {}", req.method, path)));
    if (!loaded) {
      return error_response(st, unavailable("the model is still loading"));
    }
    if (path == "/tokenize") return tokenize(st, req);
    if (path == "/detokenize") return detokenize(st, req);
    int status = 503;
    const char* state = engine_state(st, &status);
    if (status != 200) {
      return error_response(st, unavailable(fmt::format("the server is {}", state)));
    }
    return generate(st, path == "/v1/chat/completions" ? Endpoint::kChat : Endpoint::kCompletions, req);
  };
}

}  // namespace kiln::serve
