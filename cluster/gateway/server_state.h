// Internal to cluster/gateway: the state one Gateway shares with its listener and sessions, and
// the Asio/Beast names the gateway files use. Not part of the public API (see gateway.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "cluster/gateway/gateway.h"

// GCC 12 at -O1 reports -Wmismatched-new-delete on every asio::awaitable coroutine (a false
// positive on Asio's frame allocator; -O2/-O3 do not). The gateway's coroutine files include this
// header, so it is silenced for them here, and only for GCC.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace kiln::gateway::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Completion token of every awaited operation: errors come back as values, never as exceptions.
inline constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

class Session;

// Guards posting into the io_context from foreign threads (ResponseSource wake-ups).
// Gateway::stop() closes it once its threads are joined, so a wake-up that comes later is a no-op.
struct PostGuard {
  std::mutex mu;
  bool open = true;  // guarded by mu
};

// Shared (shared_ptr) by the Gateway, its listener and every session; thread-safe as noted.
class ServerState {
 public:
  ServerState(asio::io_context& io, GatewayOptions opts, Handler h)
      : ioc(io), options(std::move(opts)), handler(std::move(h)) {}

  asio::io_context& ioc;         // owned by Gateway::Impl, outlives every session
  const GatewayOptions options;  // immutable after start
  const Handler handler;
  const std::shared_ptr<PostGuard> post_guard = std::make_shared<PostGuard>();
  std::atomic<bool> draining{false};     // stop_accepting() or stop() was called
  std::atomic<bool> stopping{false};     // stop() was called: sessions close at once
  std::atomic<int> open_connections{0};  // sessions started and not yet closed
  std::atomic<uint64_t> next_session_id{1};

  // The live sessions, so stop_accepting()/stop() can reach them. Any thread.
  void add(const std::shared_ptr<Session>& s) {
    std::lock_guard lock(mu_);
    sessions_[s.get()] = s;
  }
  void remove(const Session* s) {
    std::lock_guard lock(mu_);
    sessions_.erase(s);
  }
  std::vector<std::shared_ptr<Session>> sessions() {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<Session>> out;
    out.reserve(sessions_.size());
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::unordered_map<const Session*, std::weak_ptr<Session>> sessions_;  // guarded by mu_
};

}  // namespace kiln::gateway::detail
