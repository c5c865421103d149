// Internal to cluster/gateway: the listening socket and its accept loop. Connections over
// options.max_connections (or arriving while draining) are accepted and closed at once.
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

  std::shared_ptr<ServerState> state_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;  // used on strand_ once start() ran
  int port_ = 0;
  std::atomic<bool> finished_{false};
};

}  // namespace kiln::gateway::detail
