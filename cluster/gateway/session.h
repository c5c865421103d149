// Internal to cluster/gateway: one HTTP/1.1 connection, served by one coroutine on its strand:
// the keep-alive loop, bounded request reading, routing, and plain, deferred or streamed answers.
#pragma once

#include <atomic>
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

  // Connection-cap eviction (the listener, any thread). A session is evictable while it has no
  // request in hand: waiting for one (idle) or still reading its head or body. Its rank orders
  // victims: sessions that never completed a request first, then the longest in that state.
  struct EvictRank {
    bool served = false;           // a request was completed on this connection before
    Clock::time_point since;       // accepted, or the end of the last response
  };
  bool evictable() const { return phase_.load() == kAwaitingRequest; }
  EvictRank evict_rank() const;
  // Closes the session if it is still evictable (atomically with its taking up a request);
  // false when it is not (it got a request in the meantime, or was evicted already).
  bool try_evict();

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

  // Phases for eviction; moves only awaiting → busy (CAS, by the session), busy → awaiting (the
  // session) and awaiting → evicted (CAS, by try_evict).
  static constexpr int kAwaitingRequest = 0, kBusy = 1, kEvicted = 2;

  std::shared_ptr<ServerState> state_;
  Connection conn_;
  const uint64_t id_;  // for the log
  const Clock::time_point accepted_ = Clock::now();
  std::atomic<int> phase_{kAwaitingRequest};
  std::atomic<bool> served_{false};                           // a request was completed
  std::atomic<Clock::rep> since_{accepted_.time_since_epoch().count()};  // EvictRank::since
  // Strand-only state:
  bool idle_ = false;                       // waiting for the first byte of a request
  bool closed_ = false;                     // shutdown() ran
  std::shared_ptr<ResponseSource> source_;  // the deferred/streamed response in progress
  bool source_cancelled_ = false;
};

}  // namespace kiln::gateway::detail
