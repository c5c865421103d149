// Internal to cluster/gateway: the listening socket and its accept loop. At
// options.max_connections open, a new connection evicts one that holds no request (never sent a
// complete one first, then the longest waiting: see Session::try_evict); when every connection
// is busy with a request, the new one is accepted and closed at once. It keeps accepting while
// draining (new connections get one answer, with Connection: close) until close().
#pragma once

#include <atomic>
#include <memory>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/strand.hpp>

#include "cluster/gateway/server_state.h"
#include "kernels/base/status.h"

namespace kiln::gateway::detail {

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  // Binds and listens on options.host:options.port; the error names host:port.
  static StatusOr<std::shared_ptr<Listener>> open(std::shared_ptr<ServerState> state);

  int port() const { return port_; }
  // Spawns the accept loop on the listener's strand.
  void start();
  // Any thread: closes the acceptor; the loop ends and no connection is accepted after.
  void close();
  // The accept loop has ended (any thread).
  bool finished() const { return finished_.load(); }

  explicit Listener(std::shared_ptr<ServerState> state);  // use open()

 private:
  static asio::awaitable<void> accept_loop(std::shared_ptr<Listener> self);
  void admit(tcp::socket socket);
  // Evicts the best-ranked evictable session; false when none could be.
  bool evict_one();

  std::shared_ptr<ServerState> state_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;  // used on strand_ once start() ran
  int port_ = 0;
  std::atomic<bool> finished_{false};
};

}  // namespace kiln::gateway::detail
