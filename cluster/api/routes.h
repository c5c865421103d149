// The routes of kiln's HTTP surface (serving.md): OpenAI completions and chat (streamed and not),
// models, health, metrics, tokenize/detokenize. They validate and tokenize on the gateway's
// threads, hand generation to the Engine and turn its events into responses.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/gateway/gateway.h"
#include "cluster/api/api.h"
#include "cluster/api/auth.h"
#include "cluster/engine/engine.h"
#include "cluster/serve/metrics.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace kiln::serve {

// Load progress of one rank, for /health/ready and the start-up log.
struct RankLoad {
  int rank = 0;
  int64_t loaded_bytes = 0;
  int64_t total_bytes = 0;
  bool ready = false;
};

struct ServerState {
  // Published once loading is done (tokenizer first, then the engine); null while loading.
  std::atomic<Engine*> engine{nullptr};
  std::atomic<const text::Tokenizer*> tokenizer{nullptr};
  text::ChatOptions chat;            // default system text from the checkpoint's template
  RequestLimits limits;
  std::string model_id;
  int64_t created = 0;               // unix seconds, for /v1/models
  std::vector<std::string> api_keys; // empty = no authentication
  bool metrics_require_key = false;
  Metrics* metrics = nullptr;
  int world_size = 1;
  // Set from other threads while loading; read by /health.
  mutable std::mutex load_mu;
  std::vector<RankLoad> ranks;
  std::atomic<bool> failed{false};
  std::string failure;               // why the server is not serving (guarded by load_mu)
};

// Defines the request-level metric families (requests_total, rank_up) on `metrics`.
void define_route_metrics(Metrics& metrics);

// The gateway handler over `state` (which must outlive the gateway). HEAD is answered as GET
// (the gateway drops the body). While the engine drains, /health is 503 {"status":"draining"}
// and every route but /health* and /metrics is 503 with an OpenAI error.
gateway::Handler make_routes(ServerState& state);

}  // namespace kiln::serve
