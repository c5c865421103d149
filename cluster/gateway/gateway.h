// The HTTP/1.1 server on rank 0 (Boost.Beast over Asio, C++20 coroutines): accepts connections,
// reads and bounds requests, calls the route handler, writes plain, deferred or streamed (SSE)
// responses, and closes slow or vanished peers. It knows nothing of models or the OpenAI format:
// routes (cluster/serve) decide what to answer.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/base/status.h"

namespace kiln::gateway {

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0 = any free port (see Gateway::port())
  int64_t max_body_bytes = 4 << 20;  // Content-Length over this → 413 before reading the body;
                                     // chunked bodies counted as they arrive (413 when over)
  int64_t max_header_bytes = 64 << 10;  // → 431, then close
  // A request's whole head must arrive within read_timeout: of the accept for a connection's
  // first request (so silent and slowloris connections are closed after it), of its first byte
  // for later ones. Then its whole body within read_timeout of the end of the head.
  std::chrono::milliseconds read_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};  // per write operation
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive connection between requests
  std::chrono::milliseconds ping_interval{5000};   // SSE ": ping" after this long without output
  // Open connections. At the cap a new connection evicts (closes) one that holds no request:
  // one that never completed a request first (silent, slowloris, slow body), else the longest
  // idle keep-alive one; only when all are busy with a request is the new one closed at once.
  // (Briefly, while an evicted one closes, one more may be open.)
  int max_connections = 256;
  int threads = 1;            // Asio threads
  // Access-Control-Allow-Origin (echoing the Origin) only for these exact origins ("*": any);
  // the gateway answers their OPTIONS preflights itself (204), other origins' with 403.
  std::vector<std::string> cors_allow_origins;
  // Body of the 413 / 431 / 400 (unparsable HTTP) responses the gateway writes itself, and of
  // 403 (preflight from another origin) and 500 (the handler threw); the OpenAI envelope is
  // filled in by the caller of Gateway (routes) via this hook. Empty: a plain
  // {"error":{"message","type","param":null,"code":null}}. Called on Asio threads.
  std::function<std::string(int status, const std::string& message)> error_body;
};

struct HttpRequest {
  std::string method;     // "GET", "POST", ...; a HEAD request is answered with the head of
                          // the handler's response to it (the body is never sent)
  std::string target;     // path and query as sent
  std::string path;       // target without the query
  std::string body;
  std::string authorization;  // the Authorization header, as sent
  std::string content_type;
  std::string origin;
  std::string request_id;     // X-Request-Id if sent, else generated
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra (e.g. Retry-After)
};

// Output produced on another thread (the engine) for one request. All methods but wake-up
// registration are called on the session's strand.
class ResponseSource {
 public:
  virtual ~ResponseSource() = default;
  // `wake` may be called from any thread, any number of times; it schedules the session to call
  // take()/take_response() again (a no-op once the connection or the gateway is gone).
  // set_wakeup is called once, before the first take.
  virtual void set_wakeup(std::function<void()> wake) = 0;
  // Streams: the bytes ready now (already SSE-framed; may be empty); *done once everything,
  // including "data: [DONE]", has been returned.
  virtual std::string take(bool* done) = 0;
  // Deferred (non-streamed) responses: the whole response once it is ready.
  virtual std::optional<HttpResponse> take_response() = 0;
  // The client went away, a write failed or timed out, or the gateway is stopping: abort the
  // work (idempotent). The session may still call take() afterwards to drain.
  virtual void cancel() = 0;
};

// What a route returns: a complete response, or a response whose body comes from `source`.
struct RouteResult {
  HttpResponse response;                    // complete, or for a stream its head (status, headers)
  std::shared_ptr<ResponseSource> source;   // null: `response` is complete
  bool stream = false;  // source is an SSE stream: the head goes out at once (chunked
                        // transfer-encoding, Content-Type text/event-stream, Cache-Control:
                        // no-cache), then take() output as it comes, ": ping\n\n" when idle.
                        // Otherwise a deferred response: take_response() is awaited, and a
                        // client disconnect meanwhile calls cancel().
};

// Called on an Asio thread for every complete request; must not block for long (no model work).
// With threads > 1 it runs concurrently for different connections. A thrown exception becomes a
// 500 (logged with the request id).
using Handler = std::function<RouteResult(const HttpRequest&)>;

class Gateway {
 public:
  Gateway(GatewayOptions options, Handler handler);
  ~Gateway();  // stop() then join
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Validates the options, binds and listens (error naming host:port when it cannot), then
  // serves on its own threads. Once only.
  Status start();
  int port() const;  // the bound port (useful with port 0)
  // Starts the drain: sessions finish their current response, keep-alive is refused from now on
  // (Connection: close) and idle connections are closed. The listener keeps accepting until
  // stop(), each new connection getting one answer (the handler's: e.g. a 503 from /health).
  void stop_accepting();
  // Closes every connection (cancelling their sources) and joins the threads. Idempotent; must
  // not be called from the handler or a ResponseSource (it joins the threads they run on).
  // Wake-ups after stop() are no-ops.
  void stop();
  int open_connections() const;  // accepted, not yet closed (connections over the cap excluded)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::gateway
