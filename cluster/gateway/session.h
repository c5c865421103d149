// Internal to cluster/gateway: one HTTP/1.1 connection, served by one coroutine on its strand:
// the keep-alive loop, bounded request reading, routing, and plain, deferred or streamed answers.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "cluster/gateway/connection.h"
#include "cluster/gateway/http_util.h"
#include "cluster/gateway/server_state.h"

namespace kiln::gateway::detail {

class Session : public std::enable_shared_from_this<Session> {
 public:
  // Counts itself in state->open_connections until its coroutine ends.
  Session(std::shared_ptr<ServerState> state, tcp::socket socket);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Registers with the state and spawns the coroutine. Call once, right after construction.
  void start();
  // Any thread: closes the connection if it waits idle for a request (stop_accepting()); a busy
  // one finishes its response with Connection: close.
  void drain();
  // Any thread: cancels the current source, closes the socket (stop()).
  void shutdown();

 private:
  static asio::awaitable<void> run(std::shared_ptr<Session> self);
  asio::awaitable<void> serve();
  // The next request, or nullopt when the connection is to end (any error answer written).
  asio::awaitable<std::optional<BeastRequest>> read_request();
  asio::awaitable<void> reject_read(const beast::error_code& ec, const Exchange& exchange);
  asio::awaitable<void> reply_error(int status, const std::string& message,
                                    const Exchange& exchange);
  // Each returns true when the connection may serve another request.
  asio::awaitable<bool> respond(BeastRequest request);
  asio::awaitable<bool> respond_deferred(const Exchange& exchange);
  asio::awaitable<bool> respond_stream(const HttpResponse& head, const Exchange& exchange);

  bool keep_alive(const Exchange& exchange) const;
  std::function<void()> make_wake();
  void cancel_source();

  std::shared_ptr<ServerState> state_;
  Connection conn_;
  const uint64_t id_;  // for the log
  // Strand-only state:
  bool idle_ = false;                       // waiting for the first byte of a request
  bool closed_ = false;                     // shutdown() ran
  std::shared_ptr<ResponseSource> source_;  // the deferred/streamed response in progress
  bool source_cancelled_ = false;
};

}  // namespace kiln::gateway::detail
