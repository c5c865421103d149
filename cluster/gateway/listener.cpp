// The accept loop: one strand per accepted connection, the connection cap (with eviction of
// connections that hold no request), back-off on accept errors (e.g. out of file descriptors).
#include "cluster/gateway/listener.h"

#include <algorithm>
#include <chrono>
#include <vector>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "cluster/gateway/session.h"

namespace kiln::gateway::detail {

namespace {

constexpr std::chrono::milliseconds kAcceptBackoff{20};

Status listen_error(const GatewayOptions& o, const std::string& what) {
  return {StatusCode::kUnavailable,
          fmt::format("gateway: cannot listen on {}:{}: {}", o.host, o.port, what)};
}

}  // namespace

Listener::Listener(std::shared_ptr<ServerState> state)
    : state_(std::move(state)), strand_(asio::make_strand(state_->ioc)), acceptor_(strand_) {}

StatusOr<std::shared_ptr<Listener>> Listener::open(std::shared_ptr<ServerState> state) {
  const GatewayOptions& o = state->options;
  if (o.port < 0 || o.port > 65535) return listen_error(o, "port out of range");
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  auto address = asio::ip::make_address(o.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<unsigned short>(o.port));
  } else {
    tcp::resolver resolver(state->ioc);
    auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || results.empty()) return listen_error(o, ec ? ec.message() : "host not found");
    endpoint = results.begin()->endpoint();
  }
  auto listener = std::make_shared<Listener>(std::move(state));
  tcp::acceptor& acc = listener->acceptor_;
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return listen_error(o, ec.message());
  listener->port_ = acc.local_endpoint(ec).port();
  if (ec) return listen_error(o, ec.message());
  return listener;
}

void Listener::start() { asio::co_spawn(strand_, accept_loop(shared_from_this()), asio::detached); }

void Listener::close() {
  asio::post(strand_, [self = shared_from_this()] {
    boost::system::error_code ec;
    self->acceptor_.close(ec);
  });
}

asio::awaitable<void> Listener::accept_loop(std::shared_ptr<Listener> self) {
  try {
    for (;;) {
      tcp::socket socket(asio::make_strand(self->state_->ioc));
      auto [ec] = co_await self->acceptor_.async_accept(socket, kTuple);
      if (!self->acceptor_.is_open()) break;
      if (ec) {
        spdlog::debug("gateway: accept failed: {}", ec.message());
        asio::steady_timer backoff(self->strand_, kAcceptBackoff);
        auto [wait_ec] = co_await backoff.async_wait(kTuple);
        (void)wait_ec;
        continue;
      }
      self->admit(std::move(socket));
    }
  } catch (const std::exception& e) {
    spdlog::error("gateway: accept loop ended: {}", e.what());
  }
  self->finished_ = true;
}

bool Listener::evict_one() {
  struct Candidate {
    std::shared_ptr<Session> session;
    Session::EvictRank rank;
  };
  std::vector<Candidate> candidates;
  for (auto& s : state_->sessions()) {
    if (s->evictable()) candidates.push_back({s, s->evict_rank()});
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.rank.served != b.rank.served) return !a.rank.served;  // never served a request first
    return a.rank.since < b.rank.since;                          // then the longest waiting
  });
  for (auto& c : candidates) {
    if (c.session->try_evict()) return true;
  }
  return false;
}

void Listener::admit(tcp::socket socket) {
  boost::system::error_code ec;
  if (state_->open_connections.load() >= state_->options.max_connections && !evict_one()) {
    spdlog::debug("gateway: connection refused ({} open, cap {}, all busy)",
                  state_->open_connections.load(), state_->options.max_connections);
    socket.close(ec);
    return;
  }
  socket.set_option(tcp::no_delay(true), ec);  // SSE chunks and small answers go out at once
  state_->open_connections.fetch_add(1);
  std::make_shared<Session>(state_, std::move(socket))->start();
}

}  // namespace kiln::gateway::detail
